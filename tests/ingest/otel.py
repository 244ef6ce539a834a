"""OpenTelemetry SDK helpers for the ingest tests and bench/ingest_http.py: real SDK spans, as an
app's exporter would send them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def tracer_provider(exporter: Any, resource: dict[str, str]) -> Any:
    """An SDK TracerProvider that hands every finished span to `exporter` at once."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def captured_spans(emit: Callable[[Any], None], resource: dict[str, str]) -> list[Any]:
    """The finished spans of `emit(provider)`, ready for the SDK's OTLP encoder (encode_spans)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    spans: list[Any] = []

    class Capture(SpanExporter):
        def export(self, items):  # type: ignore[no-untyped-def]
            spans.extend(items)
            return SpanExportResult.SUCCESS

    provider = tracer_provider(Capture(), resource)
    emit(provider)
    provider.shutdown()
    return spans
