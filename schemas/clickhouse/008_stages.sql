-- Where each worker's time goes (issue 15). Idempotent.
--
-- With every heartbeat a worker reports its process's CPU seconds and, per stage of its batch
-- handling (parse, pii, each detector, each store call, ...), the CPU and wall seconds it has spent
-- there since it started, and how often it entered it (ingest/pipeline/stages.py). Differences between two heartbeats give
-- microseconds per event: bench/pipeline.py prints that budget.

ALTER TABLE ${db}.workers ADD COLUMN IF NOT EXISTS process_cpu_s Float64;
ALTER TABLE ${db}.workers ADD COLUMN IF NOT EXISTS stage_cpu_s Map(String, Float64);
ALTER TABLE ${db}.workers ADD COLUMN IF NOT EXISTS stage_wall_s Map(String, Float64);
ALTER TABLE ${db}.workers ADD COLUMN IF NOT EXISTS stage_calls Map(String, UInt64);
