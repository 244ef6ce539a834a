-- Detector outputs beyond score rows (issue 3). Idempotent like 001.

-- How many PII matches each field had before redaction ("output.email" -> 2); the text itself
-- is stored already redacted, hashed or kept, per the PII policy.
ALTER TABLE ${db}.traces ADD COLUMN IF NOT EXISTS pii Map(LowCardinality(String), UInt32) AFTER extra;

-- NULL is "not applicable" (grounding without retrieved context): avg() skips it, where a made-up
-- number would bias every aggregate.
ALTER TABLE ${db}.scores MODIFY COLUMN score Nullable(Float32);

-- Sentence embeddings of input and output, unit vectors quantised to int8 (component * 127):
-- 384 bytes a vector instead of 1,536, and cosine similarity within 0.01 of float32.
CREATE TABLE IF NOT EXISTS ${db}.embeddings
(
    event_id    UUID,
    app         LowCardinality(String),
    release     LowCardinality(String),
    timestamp   DateTime64(3, 'UTC'),
    target      LowCardinality(String),
    model       LowCardinality(String),
    vector      Array(Int8) CODEC(ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (app, target, toStartOfHour(timestamp), event_id)
TTL toDateTime(timestamp) + INTERVAL ${retention_days} DAY;

-- One row per drift check: what was compared, how much data, the verdict and what moved.
CREATE TABLE IF NOT EXISTS ${db}.drift
(
    checked_at          DateTime64(3, 'UTC'),
    app                 LowCardinality(String),
    target              LowCardinality(String),
    method              LowCardinality(String),
    reference           String,
    current             String,
    reference_size      UInt32,
    current_size        UInt32,
    statistic           Nullable(Float64),
    p_value             Nullable(Float64),
    threshold           Float64,
    drifted             Nullable(UInt8),
    verdict             LowCardinality(String),
    terms_up            Array(String),
    terms_down          Array(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(checked_at)
ORDER BY (app, target, checked_at);
