-- llmwatch core tables. Applied idempotently by `llmwatch migrate` and at start-up.
-- ${db} and ${retention_days} are filled in from settings.
--
-- Design (see docs/architecture.md, "Storage layout"): events are immutable, one row each; detector results are separate
-- score rows; sort keys lead with app and a coarse time bucket (the hour: no date boundary to
-- special-case); monthly partitions; raw text expires after ${retention_days} days through column
-- TTLs while the numbers (latency, tokens, cost, scores) stay.
-- ReplacingMergeTree is only the backstop: the worker never inserts an event_id that is already
-- stored (see ingest/sink.py), so plain count() is exact without FINAL.

CREATE DATABASE IF NOT EXISTS ${db};

CREATE TABLE IF NOT EXISTS ${db}.traces
(
    event_id        UUID,
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    timestamp       DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    -- Set by the server when the row is written: emit-to-row latency is inserted_at - timestamp.
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    app             LowCardinality(String),
    environment     LowCardinality(String),
    prompt_id       LowCardinality(String),
    prompt_version  LowCardinality(String),
    model           LowCardinality(String),
    provider        LowCardinality(String),
    input           String CODEC(ZSTD(3)),
    input_messages  Array(Tuple(role LowCardinality(String), content String)) CODEC(ZSTD(3)),
    output          String CODEC(ZSTD(3)),
    context         Array(String) CODEC(ZSTD(3)),
    context_ids     Array(String),
    latency_ms      Nullable(Float64),
    input_tokens    Nullable(UInt32),
    output_tokens   Nullable(UInt32),
    cost_usd        Nullable(Float64),
    user_id         String,
    session_id      String,
    tags            Map(LowCardinality(String), String),
    error           String,
    input_chars     UInt32,
    output_chars    UInt32,
    extra           String CODEC(ZSTD(3)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (app, toStartOfHour(timestamp), event_id);

CREATE TABLE IF NOT EXISTS ${db}.scores
(
    event_id          UUID,
    app               LowCardinality(String),
    timestamp         DateTime64(3, 'UTC'),
    detector          LowCardinality(String),
    detector_version  LowCardinality(String),
    target            LowCardinality(String),
    score             Float32,
    label             LowCardinality(String),
    details           String CODEC(ZSTD(3)),
    scored_at         DateTime64(3, 'UTC'),
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (app, detector, toStartOfHour(timestamp), event_id, target);

CREATE TABLE IF NOT EXISTS ${db}.feedback
(
    event_id    UUID,
    trace_id    String,
    app         LowCardinality(String),
    timestamp   DateTime64(3, 'UTC'),
    score       Float32,
    comment     String CODEC(ZSTD(3)),
    user_id     String,
    received_at DateTime64(3, 'UTC'),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (app, toStartOfHour(timestamp), event_id);

-- Every rejected message, once: keyed by where it sat in Kafka and a hash of its bytes.
CREATE TABLE IF NOT EXISTS ${db}.rejected
(
    rejection_id  FixedString(16),
    received_at   DateTime64(3, 'UTC'),
    topic         LowCardinality(String),
    partition     UInt32,
    offset        UInt64,
    reason        LowCardinality(String),
    detail        String,
    raw           String CODEC(ZSTD(3)),
    raw_bytes     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (toStartOfHour(received_at), rejection_id);

-- One row per worker, refreshed every few seconds: `llmwatch status` and the console read it.
CREATE TABLE IF NOT EXISTS ${db}.workers
(
    worker_id   String,
    host        String,
    pid         UInt32,
    started_at  DateTime64(3, 'UTC'),
    seen_at     DateTime64(3, 'UTC'),
    traces      UInt64,
    scores      UInt64,
    rejected    UInt64,
    duplicates  UInt64
)
ENGINE = ReplacingMergeTree(seen_at)
ORDER BY worker_id
TTL toDateTime(seen_at) + INTERVAL 7 DAY;
