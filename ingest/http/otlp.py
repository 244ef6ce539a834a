"""OTLP traces → llmwatch trace events. Pure: bytes in, event dicts out (ingest/http/server.py serves it).

Spans that describe an LLM call become trace events (schema v1); every other span is ignored
and counted. Conventions read side by side, first match wins (docs/ingest.md has the table):

| event field | OTel GenAI (current, then legacy) | OpenInference | Traceloop / Langfuse |
|---|---|---|---|
| input | `gen_ai.input.messages` (+ `gen_ai.system_instructions`), `gen_ai.prompt.N.*`, `gen_ai.prompt` | `llm.input_messages.N.message.*`, `input.value` | |
| output | `gen_ai.output.messages`, `gen_ai.completion.N.*`, `gen_ai.completion` | `llm.output_messages.N.message.*`, `output.value` | |
| context | `gen_ai.retrieval.documents` | `retrieval.documents.N.document.content` | |
| model / provider | `gen_ai.request.model`, `gen_ai.response.model` / `gen_ai.provider.name`, `gen_ai.system` | `llm.model_name` / `llm.provider`, `llm.system` | |
| prompt id / version | `gen_ai.prompt.name` | `llm.prompt_template.version` | `traceloop.prompt.key/version`, `langfuse.prompt.name/version` |
| tokens | `gen_ai.usage.input_tokens/output_tokens`, `…prompt_tokens/completion_tokens` | `llm.token_count.prompt/completion` | |
| cost | `gen_ai.usage.cost` | `llm.cost.total` | |
| user / session | `user.id`, `enduser.id` / `session.id`, `gen_ai.conversation.id` | `user.id` / `session.id` | |
| app / environment | resource `service.name` / `deployment.environment.name`, `deployment.environment` | | |

The event id is derived from the trace and span ids, so an exporter's retry is stored once.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from llmwatch.core.events import nesting_depth
from llmwatch.ingest.sdk.spans import SPAN_KINDS

__all__ = ["OtlpError", "OtlpResult", "decode_request", "span_events"]

# OTLP nests about ten levels, plus attribute values (kvlists in kvlists): 64 is room to spare,
# and far from what makes a recursive parser fall over.
MAX_JSON_DEPTH = 64
_EVENT_NS = uuid.UUID("3b8f3c8e-5d0e-4f57-9a53-6c8b1b7d2e41")
_INDEXED = re.compile(r"^(gen_ai\.(?:prompt|completion)|llm\.(?:input|output)_messages|retrieval\.documents)\.(\d+)\.(.+)$")
STATUS_ERROR = 2


class OtlpError(ValueError):
    """The body is not an OTLP ExportTraceServiceRequest."""


@dataclass
class OtlpResult:
    events: list[dict[str, Any]] = field(default_factory=list)  # trace events and span events
    other_spans: int = 0  # not LLM calls: kept as span events (tools, retrievals, chains, HTTP ...)
    rejected_spans: int = 0  # LLM spans without the fields an event needs
    errors: list[str] = field(default_factory=list)


def decode_request(body: bytes, content_type: str) -> Any:
    """An ExportTraceServiceRequest from OTLP/HTTP protobuf or JSON bytes."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    if content_type.startswith("application/json"):
        try:
            document = orjson.loads(body)  # refuses nesting past 1024 levels instead of recursing
            if nesting_depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise OtlpError(f"not OTLP JSON: nesting deeper than {MAX_JSON_DEPTH} levels")
            _hex_ids_to_base64(document)
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
        except (ValueError, TypeError, RecursionError, json_format.ParseError) as exc:
            raise OtlpError(f"not OTLP JSON: {exc}") from None
        return request
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpError(f"not OTLP protobuf: {exc}") from None
    return request


def _hex_ids_to_base64(document: Any) -> None:
    """OTLP JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64."""
    def items(parent: Any, key: str) -> list[Any]:
        value = parent.get(key, []) if isinstance(parent, dict) else []
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    for resource_spans in items(document, "resourceSpans"):
        for scope_spans in items(resource_spans, "scopeSpans"):
            for span in items(scope_spans, "spans"):
                for key in ("traceId", "spanId", "parentSpanId"):
                    value = span.get(key)
                    if isinstance(value, str) and value and re.fullmatch(r"[0-9a-fA-F]+", value):
                        span[key] = base64.b64encode(bytes.fromhex(value)).decode()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind) if kind else None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except ValueError:
            return value
    return value


def _text(content: Any) -> str:
    """Text of a message's content: a string, or GenAI `parts` (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part.get("content") if isinstance(part, dict) else part) for part in content
                         if not isinstance(part, dict) or part.get("type", "text") == "text")
    if isinstance(content, dict):
        return _text(content.get("content") or content.get("text") or "")
    return "" if content is None else str(content)


def _messages(value: Any) -> list[dict[str, str]]:
    """GenAI message lists (`role` + `parts` or `content`) as schema messages."""
    value = _json(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return []
    out = []
    for message in value:
        if isinstance(message, dict):
            content = message.get("parts", message.get("content", ""))
            out.append({"role": str(message.get("role", "user")), "content": _text(content)})
    return out


def _indexed(attrs: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """`gen_ai.prompt.0.role` style attributes grouped: {prefix: {index: {rest: value}}}."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        match = _INDEXED.match(key)
        if match:
            prefix, index, rest = match.groups()
            groups.setdefault(prefix, {}).setdefault(int(index), {})[rest.removeprefix("message.").removeprefix("document.")] = value
    return groups


def _indexed_messages(groups: dict[str, dict[int, dict[str, Any]]], prefix: str) -> list[dict[str, str]]:
    return [
        {"role": str(item.get("role", "user")), "content": _text(item.get("content", ""))}
        for _, item in sorted(groups.get(prefix, {}).items())
    ]


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value not in (None, ""):
            return value
    return None


def _input(attrs: dict[str, Any], groups: dict[str, dict[int, dict[str, Any]]]) -> Any:
    messages = _messages(attrs.get("gen_ai.input.messages"))
    system = attrs.get("gen_ai.system_instructions")
    if messages and system:
        messages.insert(0, {"role": "system", "content": _text(_json(system))})
    messages = messages or _indexed_messages(groups, "gen_ai.prompt") or _indexed_messages(groups, "llm.input_messages")
    if messages:
        return messages
    return _first(attrs, "gen_ai.prompt", "input.value")


def _output(attrs: dict[str, Any], groups: dict[str, dict[int, dict[str, Any]]]) -> Any:
    messages = (_messages(attrs.get("gen_ai.output.messages")) or _indexed_messages(groups, "gen_ai.completion")
                or _indexed_messages(groups, "llm.output_messages"))
    if messages:
        return "\n".join(m["content"] for m in messages)
    return _first(attrs, "gen_ai.completion", "output.value")


def _context(attrs: dict[str, Any], groups: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    documents = _json(attrs.get("gen_ai.retrieval.documents"))
    if isinstance(documents, list):
        return [_text(d) for d in documents if _text(d)]
    return [str(item["content"]) for _, item in sorted(groups.get("retrieval.documents", {}).items()) if item.get("content")]


def _is_llm_span(attrs: dict[str, Any]) -> bool:
    if attrs.get("openinference.span.kind") in ("LLM", "llm"):
        return True
    operation = attrs.get("gen_ai.operation.name")
    if operation in ("chat", "text_completion", "generate_content"):
        return True
    return operation is None and any(k.startswith(("gen_ai.prompt", "gen_ai.input.messages", "llm.input_messages"))
                                     for k in attrs)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def span_events(request: Any) -> OtlpResult:
    """Trace events for the LLM spans of one export request, span events for the others."""
    result = OtlpResult()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        app = str(resource.get("service.name") or "unknown_service")
        environment = str(_first(resource, "deployment.environment.name", "deployment.environment") or "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = _attributes(span.attributes)
                if not _is_llm_span(attrs):
                    result.other_spans += 1
                    result.events.append(_span_event(span, attrs, app, environment))
                    continue
                event = _event(span, attrs, app, environment)
                if event is None:
                    result.rejected_spans += 1
                    result.errors.append(f"span {span.span_id.hex()}: an LLM span without input or output")
                    continue
                result.events.append(event)
    return result


# OpenInference's span kinds are ours; GenAI operations that are not LLM calls map to the nearest.
_KIND_OF_OPERATION = {"execute_tool": "tool", "invoke_agent": "agent", "create_agent": "agent",
                      "embeddings": "embedding"}
# Span attributes kept on a span event: the schema's bounds for a map of strings.
_MAX_ATTRIBUTES, _MAX_KEY, _MAX_VALUE = 100, 128, 4096
# Read into the span's own fields rather than kept as attributes.
_SPAN_FIELDS = frozenset({"openinference.span.kind", "gen_ai.operation.name", "input.value", "output.value",
                          "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "user.id", "enduser.id",
                          "session.id", "gen_ai.conversation.id"})


def _span_event(span: Any, attrs: dict[str, Any], app: str, environment: str) -> dict[str, Any]:
    """The span event of a span that is not an LLM call."""
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    start = span.start_time_unix_nano or span.end_time_unix_nano
    kind = str(attrs.get("openinference.span.kind") or "").lower()
    if kind not in SPAN_KINDS:
        kind = _KIND_OF_OPERATION.get(str(attrs.get("gen_ai.operation.name")), "chain")
    event: dict[str, Any] = {
        "kind": "span",
        "event_id": str(uuid.uuid5(_EVENT_NS, f"{trace_id}/{span_id}")),
        "trace_id": trace_id,
        "span_id": span_id,
        "name": (span.name or "span")[:256],
        "span_kind": kind,
        "timestamp": datetime.fromtimestamp(start / 1e9, tz=UTC).isoformat(timespec="milliseconds"),
        "app": app,
        "status": "error" if span.status.code == STATUS_ERROR else "ok",
    }
    if span.parent_span_id:
        event["parent_span_id"] = span.parent_span_id.hex()
    if environment:
        event["environment"] = environment
    if span.end_time_unix_nano and span.start_time_unix_nano:
        event["duration_ms"] = max(0.0, (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)
    value_in = _first(attrs, "input.value", "gen_ai.tool.call.arguments")
    value_out = _first(attrs, "output.value", "gen_ai.tool.call.result")
    if value_in is not None:
        event["input"] = _text(value_in)
    if value_out is not None:
        event["output"] = _text(value_out)
    user, session = _first(attrs, "user.id", "enduser.id"), _first(attrs, "session.id", "gen_ai.conversation.id")
    if user is not None:
        event["user_id"] = str(user)[:256]
    if session is not None:
        event["session_id"] = str(session)[:256]
    if span.status.code == STATUS_ERROR:
        event["error"] = span.status.message or str(attrs.get("error.type") or "error")
    kept = [(k, v) for k, v in attrs.items() if k not in _SPAN_FIELDS][:_MAX_ATTRIBUTES]
    if kept:
        event["attributes"] = {k[:_MAX_KEY]: (v if isinstance(v, str) else orjson.dumps(v).decode())[:_MAX_VALUE] for k, v in kept}
    return event


def _event(span: Any, attrs: dict[str, Any], app: str, environment: str) -> dict[str, Any] | None:
    groups = _indexed(attrs)
    prompt, completion = _input(attrs, groups), _output(attrs, groups)
    if prompt in (None, "", []) and completion in (None, ""):
        return None
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    start = span.start_time_unix_nano or span.end_time_unix_nano
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid5(_EVENT_NS, f"{trace_id}/{span_id}")),
        "trace_id": trace_id,
        "span_id": span_id,
        "timestamp": datetime.fromtimestamp(start / 1e9, tz=UTC).isoformat(timespec="milliseconds"),
        "app": app,
        "input": prompt if prompt not in (None, []) else "",
        "output": completion or "",
    }
    if span.parent_span_id:
        event["parent_span_id"] = span.parent_span_id.hex()
    if environment:
        event["environment"] = environment
    if span.end_time_unix_nano and span.start_time_unix_nano:
        event["latency_ms"] = max(0.0, (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)
    release = {
        "model": _first(attrs, "gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "llm.request.model_name"),
        "provider": _first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
        "prompt_id": _first(attrs, "gen_ai.prompt.name", "traceloop.prompt.key", "langfuse.prompt.name"),
        "prompt_version": _first(attrs, "llm.prompt_template.version", "traceloop.prompt.version", "langfuse.prompt.version"),
    }
    release = {k: str(v) for k, v in release.items() if v is not None}
    if release:
        event["release"] = release
    usage = {
        "input_tokens": _first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
        "output_tokens": _first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    }
    usage = {k: int(v) for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
    if usage:
        event["usage"] = usage
    cost = _number(_first(attrs, "gen_ai.usage.cost", "llm.cost.total"))
    if cost is not None and cost >= 0:
        event["cost_usd"] = cost
    context = _context(attrs, groups)
    if context:
        event["context"] = context
    user, session = _first(attrs, "user.id", "enduser.id"), _first(attrs, "session.id", "gen_ai.conversation.id")
    if user is not None:
        event["user_id"] = str(user)
    if session is not None:
        event["session_id"] = str(session)
    if span.status.code == STATUS_ERROR:
        event["error"] = span.status.message or str(attrs.get("error.type") or "error")
    return event
