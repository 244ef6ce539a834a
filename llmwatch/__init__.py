"""llmwatch: event-driven observability and monitoring for LLM applications.

What an app needs is importable from here, and importing it is light (the standard library,
orjson, and confluent-kafka once a Kafka emitter starts):

    from llmwatch import Emitter, Release, instrument

    llmwatch = Emitter("kafka:9092", app="support-bot", release=Release("answer", "7", "gpt-4o-mini"))
    instrument(llmwatch)        # record every openai / anthropic / LangChain / LiteLLM call

The server (`llmwatch up`, the worker, detectors, alerts, console) lives in the subpackages and
needs the `server` extra: `pip install 'llmwatch[server]'`.
"""

from llmwatch.ingest.sdk.context import release, session
from llmwatch.ingest.sdk.emitter import Emitter, LLMCall, Release
from llmwatch.ingest.sdk.instrument import instrument
from llmwatch.ingest.sdk.releases import ReleaseResolver, announce

__all__ = ["Emitter", "LLMCall", "Release", "ReleaseResolver", "announce", "instrument", "release", "session"]
