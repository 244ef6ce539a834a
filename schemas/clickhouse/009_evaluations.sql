-- Evaluations (issue 16): rubric judges, routed review, datasets, experiments. Idempotent.

-- Every judge call, cache hit and failure. Budgets are read from here (calls and cost per judge
-- and UTC day), the content cache too (an `ok` row with the same content_key). A malformed
-- answer is an `error` row with the raw text: it never becomes a score.
CREATE TABLE IF NOT EXISTS ${db}.judge_runs
(
    at             DateTime64(3, 'UTC'),
    judge          LowCardinality(String),
    event_id       UUID,
    app            LowCardinality(String),
    experiment     String,
    content_key    String,
    status         LowCardinality(String),
    verdict        String,
    score          Nullable(Float32),
    reason         String,
    error          String,
    raw            String CODEC(ZSTD(3)),
    model          LowCardinality(String),
    calls          UInt8,
    input_tokens   UInt32,
    output_tokens  UInt32,
    cost_usd       Float64,
    latency_ms     Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (judge, at, event_id);

-- Named, versioned sets of cases. A version never changes: adding cases writes a new version.
CREATE TABLE IF NOT EXISTS ${db}.datasets
(
    name        LowCardinality(String),
    version     UInt32,
    case_id     String,
    input       String CODEC(ZSTD(3)),
    context     Array(String) CODEC(ZSTD(3)),
    reference   String CODEC(ZSTD(3)),
    labels      Map(String, String),
    source      String,
    created_at  DateTime64(3, 'UTC'),
    actor       String
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (name, version, case_id);

-- One row per experiment state change (the latest per experiment_id wins).
CREATE TABLE IF NOT EXISTS ${db}.experiments
(
    experiment_id    String,
    dataset          LowCardinality(String),
    dataset_version  UInt32,
    app              LowCardinality(String),
    release          String,
    model            String,
    endpoint         String,
    system_prompt    String,
    status           LowCardinality(String),
    cases            UInt32,
    summary          String,
    actor            String,
    started_at       DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY experiment_id;

-- Each finished case of an experiment: written as soon as the candidate answered, so a resumed
-- run skips it. Its event (environment 'experiment') carries the output to the detectors.
CREATE TABLE IF NOT EXISTS ${db}.experiment_cases
(
    experiment_id  String,
    case_id        String,
    event_id       UUID,
    status         LowCardinality(String),
    output         String CODEC(ZSTD(3)),
    error          String,
    input_tokens   UInt32,
    output_tokens  UInt32,
    cost_usd       Float64,
    latency_ms     Float64,
    finished_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finished_at)
ORDER BY (experiment_id, case_id);

-- Where a scheduled job got to (review routing), so a restart neither skips nor repeats a window.
CREATE TABLE IF NOT EXISTS ${db}.job_marks
(
    job         LowCardinality(String),
    mark        DateTime64(3, 'UTC'),
    updated_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY job;
