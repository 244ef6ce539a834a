-- The worker's way into `scores` (issue 15). Idempotent.
--
-- A worker writes an event's score rows as one row here: the event's columns once, then a tuple
-- per (detector, target). The table keeps nothing (engine Null); its view unrolls each row into
-- the score rows, which `scores` stores and its own views (score_counts_mv) count as ever. A row
-- per score repeated the event's id, app, times, release and model six times: this form is a
-- third of the bytes, and about half the store's CPU per batch (docs/benchmarks.md, ninth round).
-- Anything may still insert into `scores` directly (the judge does).

CREATE TABLE IF NOT EXISTS ${db}.scores_by_event
(
    event_id     UUID,
    app          LowCardinality(String),
    timestamp    DateTime64(3, 'UTC'),
    environment  LowCardinality(String),
    release      LowCardinality(String),
    model        LowCardinality(String),
    scored_at    DateTime64(3, 'UTC'),
    scores       Array(Tuple(detector String, detector_version String, target String, score Nullable(Float32),
                             label String, details String))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scores_by_event_mv TO ${db}.scores AS
SELECT event_id, app, timestamp, environment, release, model,
       s.detector AS detector, s.detector_version AS detector_version, s.target AS target, s.score AS score,
       s.label AS label, s.details AS details, scored_at
FROM ${db}.scores_by_event
ARRAY JOIN scores AS s;
