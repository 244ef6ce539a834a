"""HTTP ingest: OTLP/HTTP traces and JSON events, into Kafka."""
