-- Per-deployment detector models learned from reviewers' labels (issue 14). Idempotent.
--
-- One row per trained version: `promoted` ones are what workers load (the highest version wins);
-- `rejected` ones did not beat the model they would replace on held-back labels and are kept for
-- the record. `model` is the weights file, base64; `metrics` the labels, split and AUCs as JSON.

CREATE TABLE IF NOT EXISTS ${db}.detector_models
(
    detector    LowCardinality(String),
    version     UInt32,
    created_at  DateTime64(3, 'UTC'),
    status      LowCardinality(String),
    labels      UInt32,
    actor       String,
    metrics     String,
    model       String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (detector, version);
