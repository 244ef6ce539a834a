"""The core: the event model, settings, errors and shared helpers. Imports nothing else of llmwatch."""
