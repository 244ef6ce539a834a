"""The pure parser: every kind of bad input gets its own reason; good events are normalised."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmwatch.core.events import (
    RELEASE_SQL,
    Feedback,
    Limits,
    Rejection,
    TraceEvent,
    has_duplicate_keys,
    nesting_depth,
    parse,
    release_name,
)
from llmwatch.schemas import trace_event_schema
from llmwatch.storage.clickhouse import ClickHouseStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def event(**overrides: object) -> dict:
    base = {
        "event_id": str(uuid.uuid4()),
        "trace_id": "trace-1",
        "timestamp": "2026-11-22T11:59:00Z",
        "app": "support-bot",
        "input": "How do I reset my password?",
        "output": "Use the 'Forgot password' link.",
    }
    base.update(overrides)
    return base


def parsed(doc: object) -> TraceEvent | Feedback | Rejection:
    return parse(json.dumps(doc).encode(), LIMITS, NOW)


class TestValidEvents:
    def test_minimal_event_is_accepted(self) -> None:
        """The six required fields are enough."""
        result = parsed(event())
        assert isinstance(result, TraceEvent)
        assert result.app == "support-bot"
        assert result.timestamp == datetime(2026, 11, 22, 11, 59, tzinfo=UTC)

    def test_epoch_milliseconds_timestamp(self) -> None:
        """Integer timestamps are epoch milliseconds."""
        ms = int(NOW.timestamp() * 1000) - 5000
        result = parsed(event(timestamp=ms))
        assert isinstance(result, TraceEvent)
        assert result.timestamp == NOW - timedelta(seconds=5)

    def test_chat_input_keeps_messages_and_uses_last_user_turn(self) -> None:
        """For chat input the text scored and stored as `input` is the last user message."""
        messages = [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ]
        result = parsed(event(input=messages))
        assert isinstance(result, TraceEvent)
        assert result.input == "second"
        assert result.input_messages[0] == ("system", "be nice")
        assert len(result.input_messages) == 4

    def test_optional_fields_are_mapped(self) -> None:
        """Release, usage, context passages and tags land in their columns."""
        result = parsed(
            event(
                release={"prompt_id": "p", "prompt_version": 8, "model": "m", "provider": "openai"},
                usage={"input_tokens": 10, "output_tokens": 20},
                context=["plain passage", {"id": "doc-1", "text": "keyed passage"}],
                latency_ms=120.5,
                cost_usd=0.001,
                tags={"channel": "web"},
                error=None,
            )
        )
        assert isinstance(result, TraceEvent)
        assert (result.prompt_version, result.model, result.provider) == ("8", "m", "openai")
        assert (result.input_tokens, result.output_tokens) == (10, 20)
        assert result.context == ("plain passage", "keyed passage")
        assert result.context_ids == ("", "doc-1")
        assert result.tags == {"channel": "web"}

    def test_unknown_fields_are_kept(self) -> None:
        """Unknown fields, top-level or inside release/usage, go to `extra`, not to the DLQ."""
        result = parsed(event(custom={"a": [1, 2]}, usage={"input_tokens": 1, "cached_tokens": 5}))
        assert isinstance(result, TraceEvent)
        assert result.extra == {"custom": {"a": [1, 2]}, "usage": {"cached_tokens": 5}}
        assert json.loads(result.row(NOW)["extra"]) == result.extra

    def test_feedback_without_event_id_gets_a_content_derived_one(self) -> None:
        """The same feedback re-sent is the same event."""
        doc = {"kind": "feedback", "trace_id": "trace-1", "score": 0, "comment": "rude"}
        first, second = parsed(doc), parsed(doc)
        assert isinstance(first, Feedback) and isinstance(second, Feedback)
        assert first.event_id == second.event_id
        assert first.timestamp == NOW


class TestRejections:
    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"not json at all", "not_json"),
            (b'{"a": NaN}', "not_json"),
            (b"\xff\xfe{}", "invalid_utf8"),
            (b'{"app": "\xed\xa0\x80"}', "invalid_utf8"),
            (b"[1, 2, 3]", "not_object"),
            (b"[" * 5000 + b"]" * 5000, "too_deep"),
        ],
    )
    def test_malformed_bytes(self, raw: bytes, reason: str) -> None:
        """Bytes that are not a JSON object are rejected with a reason naming the problem."""
        result = parse(raw, LIMITS, NOW)
        assert isinstance(result, Rejection)
        assert result.reason == reason
        assert result.raw == raw

    def test_deep_nesting_inside_unknown_fields(self) -> None:
        """Nesting beyond the limit is rejected even when the parser could read it."""
        deep: object = "leaf"
        for _ in range(40):
            deep = {"x": deep}
        result = parsed(event(custom=deep))
        assert isinstance(result, Rejection)
        assert result.reason == "too_deep"

    def test_payload_over_the_size_limit(self) -> None:
        """A 10 MB event is rejected before it is parsed."""
        raw = json.dumps(event(output="x" * 10_000_000)).encode()
        result = parse(raw, LIMITS, NOW)
        assert isinstance(result, Rejection)
        assert result.reason == "too_large"
        assert "10000" in result.detail

    @pytest.mark.parametrize("missing", ["event_id", "trace_id", "timestamp", "app", "input", "output"])
    def test_missing_required_field(self, missing: str) -> None:
        """The detail names the missing field."""
        doc = event()
        del doc[missing]
        result = parsed(doc)
        assert isinstance(result, Rejection)
        assert result.reason == "schema"
        assert missing in result.detail

    @pytest.mark.parametrize(
        ("field", "value", "path"),
        [
            ("latency_ms", "slow", "latency_ms"),
            ("latency_ms", -1, "latency_ms"),
            ("event_id", "not-a-uuid", "event_id"),
            ("input", [{"role": "user"}], "input/0"),
            ("usage", {"input_tokens": 1.5}, "usage/input_tokens"),
            ("tags", {"a": 1}, "tags/a"),
            ("app", "", "app"),
        ],
    )
    def test_wrong_types(self, field: str, value: object, path: str) -> None:
        """The detail carries the JSON path of the offending value."""
        result = parsed(event(**{field: value}))
        assert isinstance(result, Rejection)
        assert result.reason == "schema"
        assert result.detail.startswith(path)

    def test_future_timestamp(self) -> None:
        result = parsed(event(timestamp=(NOW + timedelta(days=2)).isoformat()))
        assert isinstance(result, Rejection)
        assert result.reason == "timestamp_in_future"

    def test_ancient_timestamp_hints_at_seconds(self) -> None:
        """Epoch seconds where milliseconds are expected land in 1970: the detail says so."""
        result = parsed(event(timestamp=int(NOW.timestamp())))
        assert isinstance(result, Rejection)
        assert result.reason == "timestamp_too_old"
        assert "seconds" in result.detail

    def test_unparseable_timestamp(self) -> None:
        result = parsed(event(timestamp="yesterday at noon"))
        assert isinstance(result, Rejection)
        assert result.reason == "bad_timestamp"

    def test_feedback_score_out_of_range(self) -> None:
        result = parsed({"kind": "feedback", "trace_id": "t", "score": 5})
        assert isinstance(result, Rejection)
        assert result.detail.startswith("score")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


# Generating nested JSON is slow on a loaded 2-core CI machine; that is not what these test.
@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Any bytes give exactly one outcome, never an exception."""
    assert isinstance(parse(raw, LIMITS, NOW), (TraceEvent, Feedback, Rejection))


@given(st.dictionaries(st.sampled_from(list(event()) + ["kind", "score", "context", "release"]), json_values))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_json_objects_never_raise(doc: dict) -> None:
    """Objects with the contract's field names but generated values never crash the parser."""
    assert isinstance(parsed(doc), (TraceEvent, Feedback, Rejection))


def test_the_sql_release_name_is_the_python_one(embedded_store: ClickHouseStore) -> None:
    """Alert metrics and the console name releases in SQL (traces has no release column); the
    worker names them in Python. Both must give the same string."""
    cases = [(p, v, m) for p in ("", "answer") for v in ("", "7") for m in ("", "gpt-x")]
    for prompt_id, prompt_version, model in cases:
        (sql_name,) = embedded_store.query(
            f"SELECT {RELEASE_SQL} FROM (SELECT {{p:String}} AS prompt_id, {{v:String}} AS prompt_version, "
            "{m:String} AS model)", {"p": prompt_id, "v": prompt_version, "m": model})[0]
        assert sql_name == release_name(prompt_id, prompt_version, model), (prompt_id, prompt_version, model)


_JSON_TEXT = st.text(alphabet=st.sampled_from('ab":\\ \t{},\n\u00e9'), max_size=8)
_JSON_VALUE = st.recursive(st.none() | st.integers() | _JSON_TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_JSON_TEXT, inner), max_size=3),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(_JSON_TEXT, _JSON_VALUE), min_size=1, max_size=6),
       separator=st.sampled_from([": ", ":", " : ", "\t:\n"]))
def test_repeated_keys_are_found_however_the_json_is_written(pairs: list, separator: str) -> None:
    """Duplicate keys are refused whatever the spacing and escapes (the count takes a C-level
    shortcut when it can): rebuilt from (key, value) pairs, nested ones too, with a key repeated."""
    def text(value: object) -> str:
        if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
            return "{" + ", ".join(json.dumps(k) + separator + text(v) for k, v in value) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(text(v) for v in value) + "]"
        return json.dumps(value)

    fields = [("app", "a"), ("input", "x"), ("output", "y"), *pairs]
    unique = dict(fields)
    body = "{" + ", ".join(json.dumps(k) + separator + text(v) for k, v in fields) + "}"
    result = parse(body.encode(), Limits(), datetime.now(UTC))
    if len(unique) < len(fields) or _has_repeats(pairs):
        assert isinstance(result, Rejection) and result.reason == "duplicate_key", body
    else:
        assert not (isinstance(result, Rejection) and result.reason == "duplicate_key"), body


def _has_repeats(value: object) -> bool:
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) for v in value):
            keys = [k for k, _ in value]
            return len(set(keys)) < len(keys) or any(_has_repeats(v) for _, v in value)
        return any(_has_repeats(v) for v in value)
    if isinstance(value, tuple):
        return _has_repeats(value[1])
    return False


_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", ""]),
                                            "content": st.text(max_size=5) | st.integers()}), max_size=2)
_passages = st.lists(st.text(max_size=5) | st.fixed_dictionaries({"text": st.text(max_size=5) | st.none()},
                                                                  optional={"id": st.integers() | st.text(max_size=3)}),
                     max_size=2)
_fields = st.fixed_dictionaries({}, optional={
    "input": json_values | _messages, "output": json_values, "context": json_values | _passages,
    "timestamp": st.integers(min_value=-1, max_value=2**50) | st.text(max_size=70) | st.floats(allow_nan=False),
    "event_id": st.uuids().map(str) | json_values, "latency_ms": json_values,
})


@given(_fields)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_validator_accepts_exactly_what_the_published_schema_accepts(fields: dict) -> None:
    """The worker validates with jsonschema-rs (compiled); the published schema, checked by
    jsonschema, must agree on every document."""
    doc = event(**fields)
    result = parsed(doc)
    assume(not (isinstance(result, Rejection) and result.reason == "not_json"))  # an infinite float
    valid = jsonschema.Draft7Validator(trace_event_schema()).is_valid(doc)
    assert (isinstance(result, Rejection) and result.reason == "schema") is not valid, result


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3),
    max_leaves=30,
)


def _plain_depth(doc: object) -> int:
    children = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    return 1 + max((_plain_depth(child) for child in children if isinstance(child, (dict, list))), default=0)


@settings(max_examples=500, deadline=None)
@given(_JSON, st.integers(min_value=1, max_value=6))
def test_depth_and_duplicate_keys_follow_their_plain_definitions(doc: object, limit: int) -> None:
    """The nesting depth (counted to just past the limit) and the duplicate-key check parse
    checks every message with, against recursion and a parser that sees every key."""
    raw = json.dumps(doc).encode()
    assert nesting_depth(doc, limit) == min(_plain_depth(doc), limit + 1)
    assert not has_duplicate_keys(raw, doc)
    if isinstance(doc, dict) and doc:
        key, value = next(iter(doc.items()))
        repeated = raw[:-1] + b", " + json.dumps(key).encode() + b": " + json.dumps(value).encode() + b"}"
        pairs: list[list[tuple[str, object]]] = []
        json.loads(repeated, object_pairs_hook=lambda p: pairs.append(p) or dict(p))
        assert any(len(p) != len(dict(p)) for p in pairs)
        assert has_duplicate_keys(repeated, json.loads(repeated))


def test_an_event_id_with_a_trailing_newline_is_a_schema_rejection() -> None:
    """Python's `$` matches before a final newline, so jsonschema alone passes such an id; the
    worker's validator does not, and says why (before, uuid.UUID failed: an `internal` rejection)."""
    result = parsed(event(event_id=f"{uuid.uuid4()}\n"))
    assert isinstance(result, Rejection) and result.reason == "schema", result
    assert result.detail.startswith("event_id: ") and "does not match" in result.detail
