-- Alerts (issue 4): rule state transitions and the notification outbox. Idempotent like 001.

-- Score rows carry the event's environment, release and model, so alert metrics over scores
-- filter and group without joining traces.
ALTER TABLE ${db}.scores ADD COLUMN IF NOT EXISTS environment LowCardinality(String) AFTER timestamp;
ALTER TABLE ${db}.scores ADD COLUMN IF NOT EXISTS release LowCardinality(String) AFTER environment;
ALTER TABLE ${db}.scores ADD COLUMN IF NOT EXISTS model LowCardinality(String) AFTER release;

-- Every state change of a (rule, group): pending, firing, renotify, resolved. The latest row per
-- (rule, group_key) is the state a restarted scheduler resumes from.
CREATE TABLE IF NOT EXISTS ${db}.alerts
(
    at            DateTime64(3, 'UTC'),
    rule          LowCardinality(String),
    group_key     String,
    labels        Map(LowCardinality(String), String),
    status        LowCardinality(String),
    transition    LowCardinality(String),
    level         LowCardinality(String),
    value         Nullable(Float64),
    samples       UInt64,
    threshold     Nullable(Float64),
    breaches      UInt32,
    notified_at   Nullable(DateTime64(3, 'UTC')),
    resolved_at   Nullable(DateTime64(3, 'UTC')),
    since         DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (rule, group_key, at);

-- Notifications to deliver, and what happened to each: a row per attempt, the latest wins.
CREATE TABLE IF NOT EXISTS ${db}.alert_outbox
(
    delivery_id   UUID,
    created_at    DateTime64(3, 'UTC'),
    notifier      LowCardinality(String),
    rule          LowCardinality(String),
    group_key     String,
    event         LowCardinality(String),
    payload       String,
    status        LowCardinality(String),
    attempts      UInt32,
    next_attempt  DateTime64(3, 'UTC'),
    last_error    String,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY delivery_id;

-- The release registry: which prompt version and model each app should serve. The latest row per
-- (app, release) is its status: active (served now), stable (known good), rolled_back, candidate.
CREATE TABLE IF NOT EXISTS ${db}.releases
(
    app             LowCardinality(String),
    release         String,
    prompt_id       String,
    prompt_version  String,
    model           String,
    provider        String,
    status          LowCardinality(String),
    reason          String,
    actor           String,
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (app, release);

-- Who did what to which release, and why: registrations, promotions, rollbacks.
CREATE TABLE IF NOT EXISTS ${db}.audit_log
(
    at       DateTime64(3, 'UTC'),
    actor    String,
    action   LowCardinality(String),
    app      LowCardinality(String),
    release  String,
    details  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (app, at);

-- Events a firing rule sends to human reviewers, worst first (decisions come with the console).
CREATE TABLE IF NOT EXISTS ${db}.review_queue
(
    queued_at   DateTime64(3, 'UTC'),
    event_id    UUID,
    app         LowCardinality(String),
    release     String,
    rule        LowCardinality(String),
    reason      String,
    score       Nullable(Float32),
    status      LowCardinality(String)
)
ENGINE = ReplacingMergeTree(queued_at)
ORDER BY (app, event_id, rule);

-- Label counts per 10-second bucket, kept up to date by a materialized view on every insert into
-- scores: a toxicity-rate rule over an hour reads a few thousand rows here instead of every score
-- row (bench/alerts.py: 10M scores).
CREATE TABLE IF NOT EXISTS ${db}.score_counts
(
    bucket       DateTime64(3, 'UTC'),
    app          LowCardinality(String),
    environment  LowCardinality(String),
    release      LowCardinality(String),
    model        LowCardinality(String),
    detector     LowCardinality(String),
    target       LowCardinality(String),
    label        LowCardinality(String),
    n            UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (detector, app, bucket, release, environment, model, target, label);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.score_counts_mv TO ${db}.score_counts AS
SELECT toStartOfInterval(timestamp, toIntervalSecond(10)) AS bucket, app, environment, release, model,
       detector, target, label, count() AS n
FROM ${db}.scores
GROUP BY bucket, app, environment, release, model, detector, target, label;
