"""The stream processor: parse, redact, score and store each batch exactly once."""
