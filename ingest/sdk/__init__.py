"""The SDK apps embed: the emitter (Kafka or HTTP transport) and the release resolver. Depends on the core only."""
