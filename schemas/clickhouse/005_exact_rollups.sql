-- Rollups that stay exact when two workers race (ingest/sink.py, step 5). Idempotent like 001:
-- a column already of its type is left alone.
--
-- A worker that finds an extra copy of an event takes it back out with negated rows, so the
-- counts are signed. Each correction carries an insert deduplication token, and the window
-- below is what makes ClickHouse drop the second of two identical corrections. (A replicated
-- table uses its replicated_deduplication_window instead: see docs/operations.md.)

ALTER TABLE ${db}.score_counts MODIFY COLUMN n Int64;
ALTER TABLE ${db}.score_counts MODIFY SETTING non_replicated_deduplication_window = 10000;

ALTER TABLE ${db}.trace_stats MODIFY COLUMN events SimpleAggregateFunction(sum, Int64);
ALTER TABLE ${db}.trace_stats MODIFY COLUMN errors SimpleAggregateFunction(sum, Int64);
ALTER TABLE ${db}.trace_stats MODIFY COLUMN input_tokens SimpleAggregateFunction(sum, Int64);
ALTER TABLE ${db}.trace_stats MODIFY COLUMN output_tokens SimpleAggregateFunction(sum, Int64);
ALTER TABLE ${db}.trace_stats MODIFY COLUMN latency_hist SimpleAggregateFunction(sumMap, Map(UInt16, Int64));
ALTER TABLE ${db}.trace_stats MODIFY SETTING non_replicated_deduplication_window = 10000;
