-- Agent traces, streaming and computed costs (issue 13). Idempotent like 001.
--
-- LLM calls stay rows of `traces` (scored); every other step of a trace (tool calls, retrievals,
-- chains, agent steps) is a row of `spans`, linked by trace_id and parent_span_id. Its raw text
-- (input, output) expires with the traces' (storage/migrate.py sets the TTL).

ALTER TABLE ${db}.traces ADD COLUMN IF NOT EXISTS ttft_ms Nullable(Float64) AFTER latency_ms;
ALTER TABLE ${db}.traces ADD COLUMN IF NOT EXISTS cached_input_tokens Nullable(UInt32) AFTER output_tokens;
-- 'sent' by the app, 'computed' by the worker from the price table, '' when neither could.
ALTER TABLE ${db}.traces ADD COLUMN IF NOT EXISTS cost_source LowCardinality(String) AFTER cost_usd;

CREATE TABLE IF NOT EXISTS ${db}.spans
(
    event_id        UUID,
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    timestamp       DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    app             LowCardinality(String),
    environment     LowCardinality(String),
    name            LowCardinality(String),
    span_kind       LowCardinality(String),
    duration_ms     Nullable(Float64),
    status          LowCardinality(String),
    error           String,
    input           String CODEC(ZSTD(3)),
    output          String CODEC(ZSTD(3)),
    user_id         String,
    session_id      String,
    attributes      Map(LowCardinality(String), String),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (app, toStartOfHour(timestamp), event_id);
