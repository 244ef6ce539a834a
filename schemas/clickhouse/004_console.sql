-- The console (issue 5): a per-minute rollup of traces, alert silences and acknowledgements,
-- and reviewers' decisions. Idempotent like 001.

-- Volume, errors, tokens, cost and a latency histogram per minute, app, environment, release and
-- model: the overview reads this, never the raw traces. `release` is release_name() in SQL.
-- Latency buckets are powers of 1.05 (key k holds (1.05^(k-1), 1.05^k] - 1 ms), so quantiles
-- read from the summed histogram are within 2.5 %; merging t-digest states instead was as slow
-- as reading the raw rows (180 ms over a week of minutes, measured).
CREATE TABLE IF NOT EXISTS ${db}.trace_stats
(
    bucket         DateTime('UTC'),
    app            LowCardinality(String),
    environment    LowCardinality(String),
    release        LowCardinality(String),
    model          LowCardinality(String),
    events         SimpleAggregateFunction(sum, UInt64),
    errors         SimpleAggregateFunction(sum, UInt64),
    input_tokens   SimpleAggregateFunction(sum, UInt64),
    output_tokens  SimpleAggregateFunction(sum, UInt64),
    cost_usd       SimpleAggregateFunction(sum, Float64),
    latency_hist   SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (app, bucket, release, environment, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.trace_stats_mv TO ${db}.trace_stats AS
SELECT toStartOfMinute(timestamp) AS bucket, app, environment,
       if(model = '', arrayStringConcat(arrayFilter(x -> x != '', [prompt_id, prompt_version]), ':'),
          concat(arrayStringConcat(arrayFilter(x -> x != '', [prompt_id, prompt_version]), ':'), '@', model)) AS release,
       model,
       count() AS events, countIf(error != '') AS errors,
       sum(toUInt64(ifNull(input_tokens, 0))) AS input_tokens, sum(toUInt64(ifNull(output_tokens, 0))) AS output_tokens,
       sum(ifNull(cost_usd, 0)) AS cost_usd,
       sumMap(if(latency_ms IS NULL, CAST(map(), 'Map(UInt16, UInt64)'),
                 map(toUInt16(least(65535, ceil(log(greatest(0, assumeNotNull(latency_ms)) + 1) / log(1.05)))), toUInt64(1)))) AS latency_hist
FROM ${db}.traces
GROUP BY bucket, app, environment, release, model;

-- Silences (mute a rule's notifications, for one group or all, until a time) and
-- acknowledgements (someone is on it: no reminders for this incident). The latest row per
-- (rule, group_key, action kind) counts; every row is also in audit_log.
CREATE TABLE IF NOT EXISTS ${db}.alert_actions
(
    at         DateTime64(3, 'UTC'),
    rule       LowCardinality(String),
    group_key  String,
    action     LowCardinality(String),
    until      Nullable(DateTime64(3, 'UTC')),
    actor      String,
    note       String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (rule, group_key, at);

-- One row per reviewer and event: the labels the review queue produces. A reviewer changing
-- their mind replaces their row.
CREATE TABLE IF NOT EXISTS ${db}.reviews
(
    event_id    UUID,
    reviewer    String,
    app         LowCardinality(String),
    release     String,
    decision    LowCardinality(String),
    note        String,
    decided_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (event_id, reviewer);
