"""PII detection and the redact / hash / keep policies, as pure functions."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmwatch.core.events import TraceEvent
from llmwatch.detectors import pii
from llmwatch.detectors.pii import PiiPolicy, find, find_many, redact_bytes, redact_event, redact_text

FOUND = [
    ("write to jane.doe+work@mail.example.co.uk today", "email"),
    ("call +1 (415) 555-0100", "phone"),
    ("call 020 7946 0958", "phone"),
    ("Visa 4111-1111-1111-1111", "card"),
    ("Amex 3782 822463 10005", "card"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
    ("IBAN DE89370400440532013000", "iban"),
    ("from 203.0.113.42", "ip"),
    ("from 2001:db8::8a2e:370:7334", "ip"),
    ("OPENAI_API_KEY=sk-proj-4f9XbQ2LmN8pRt6VwYz1AbCdEf", "secret"),
    ("aws AKIAIOSFODNN7EXAMPLE", "secret"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret"),
    ("Authorization: Bearer abc.def-ghi_jkl~mno123", "secret"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz", "secret"),
    ("db password: hunter2hunter2", "secret"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "secret"),
]

NOT_FOUND = [
    "Visa 4111-1111-1111-1112",  # fails Luhn
    "the meeting is on 2024-05-01 at 10:30:00",
    "version 300.1.2.999 and 1999 had 365 days",
    "order #12345678 shipped",
    "a:b:c is not an address",
    "Price is 3.50, or 12,000 items.",
]


@pytest.mark.parametrize(("text", "kind"), FOUND)
def test_finds_each_kind(text: str, kind: str) -> None:
    assert [span.kind for span in find(text)] == [kind]
    redacted, counts = redact_text(text, "redact")
    assert counts == {kind: 1}
    assert f"[{kind.upper()}]" in redacted


@pytest.mark.parametrize("text", NOT_FOUND)
def test_leaves_lookalikes_alone(text: str) -> None:
    assert redact_text(text, "redact") == (text, {})


def test_checksums_decide() -> None:
    # A mistyped IBAN is not an IBAN; its digit groups may still read as a phone number.
    assert "iban" not in {span.kind for span in find("IBAN GB82 WEST 1234 5698 7654 33")}


def test_assignment_keeps_its_name() -> None:
    assert redact_text("password=hunter2hunter2 ok", "redact")[0] == "password=[SECRET] ok"


def test_hash_is_keyed_stable_and_joinable() -> None:
    a = redact_text("mail bob@example.com", "hash", key=b"k1")[0]
    b = redact_text("again bob@example.com", "hash", key=b"k1")[0]
    c = redact_text("mail bob@example.com", "hash", key=b"k2")[0]
    assert a.split()[-1] == b.split()[-1] != c.split()[-1]
    assert "bob" not in a


def test_keep_counts_but_does_not_change() -> None:
    assert redact_text("bob@example.com", "keep") == ("bob@example.com", {"email": 1})


KEY = "a-secret-of-16-chars+"


def test_policy_parsing() -> None:
    assert PiiPolicy.parse("hash", KEY) == PiiPolicy("hash", "hash", "hash", KEY.encode())
    policy = PiiPolicy.parse("input=hash, context=keep", KEY)
    assert (policy.input, policy.output, policy.context) == ("hash", "redact", "keep")
    assert policy.strictest == "redact"
    assert PiiPolicy.parse("keep").strictest == "keep"
    for bad in ("erase", "input=erase", "prompt=redact", "input"):
        with pytest.raises(ValueError, match="bad PII policy"):
            PiiPolicy.parse(bad)
    for unkeyed in ("hash", "output=hash"):  # an unkeyed hash of a short value can be guessed
        with pytest.raises(ValueError, match="pii-hash-key"):
            PiiPolicy.parse(unkeyed, "short")


def test_redact_event_per_field() -> None:
    event = TraceEvent(
        uuid.UUID(int=1), "t", datetime.now(UTC), "app",
        input="I am bob@example.com",
        output="Your card 4111 1111 1111 1111 is blocked; call +44 20 7946 0958",
        context=("Customer email bob@example.com",),
        input_messages=(("user", "I am bob@example.com"),),
        error="timeout calling 203.0.113.9",
        tags={"customer": "bob@example.com", "ann@example.com": "vip"},
        extra={"crm": {"notes": ["call +44 20 7946 0958"]}, "n": 3},
        user_id="u-17",
        environment="prod for bob@example.com",
        prompt_id="greeting for ann@example.com",
    )
    redacted = redact_event(event, PiiPolicy.parse("input=hash,output=redact,context=keep", KEY))
    assert "bob@" not in redacted.input and "[EMAIL:" in redacted.input
    assert redacted.input_messages[0][1] == redacted.input
    assert redacted.output == "Your card [CARD] is blocked; call [PHONE]"
    assert redacted.context == event.context
    assert redacted.pii == {"input.email": 1, "messages.email": 1, "output.card": 1, "output.phone": 1,
                            "context.email": 1, "error.ip": 1, "tags.email": 2, "release.email": 2,
                            "extra.phone": 1}
    # Fields without a policy of their own get the strictest one in use (redact here).
    assert redacted.error == "timeout calling [IP]"
    assert redacted.tags == {"customer": "[EMAIL]", "[EMAIL]": "vip"}
    assert (redacted.environment, redacted.prompt_id) == ("prod for [EMAIL]", "greeting for [EMAIL]")
    assert redacted.extra == {"crm": {"notes": ["call [PHONE]"]}, "n": 3} and redacted.user_id == "u-17"


def test_redact_bytes_keeps_undecodable_bytes() -> None:
    raw = b"\xff\xfe not json, from bob@example.com"
    assert redact_bytes(raw, "redact") == b"\xff\xfe not json, from [EMAIL]"


def test_redacted_json_stays_json() -> None:
    """A rejected message that is JSON stays JSON in the DLQ: PII in its strings is redacted,
    its numbers are kept, even an epoch-ms timestamp that passes the card checksum (which once
    became a bare [CARD] and left the record unreadable)."""
    timestamp = 1796205192859  # 13 digits, Luhn-valid
    raw = json.dumps({"timestamp": timestamp, "input": "card 4111 1111 1111 1111",
                      "extra": {"bob@example.com": ['say "hi" to bob@example.com', 4111111111111111]}}).encode()
    assert json.loads(redact_bytes(raw, "redact")) == {
        "timestamp": timestamp, "input": "card [CARD]", "extra": {"[EMAIL]": ['say "hi" to [EMAIL]', 4111111111111111]}
    }
    # Text that is not JSON has no strings to confine the search to: all of it is redacted.
    assert redact_bytes(b'{"broken": 4111 1111 1111 1111', "redact") == b'{"broken": [CARD]'


@settings(max_examples=300, deadline=None)
@given(st.text(), st.emails(), st.text())
def test_no_email_survives_redaction(before: str, email: str, after: str) -> None:
    text = f"{before} {email} {after}"
    redacted, _ = redact_text(text, "redact")
    assert email not in redacted


# Strings that make a backtracking pattern rescan the rest of the text from every position:
# long runs of the characters a pattern starts in, with the terminator it looks for missing.
# A function of the size, so that the same text can be measured at two sizes.
_MB = 1 << 20


def _base64(size: int) -> str:
    return base64.b64encode(random.Random(0).randbytes(3 * size // 4)).decode()


def _repeat(unit: str) -> Callable[[int], str]:
    return lambda size: unit * (size // len(unit))


# The issue's own list: repeated local-part characters, long digit runs, base64; and the other
# starts and terminators of our patterns.
ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "local-part run": _repeat("a"),
    "dotted run": _repeat("a."),
    "dashes": _repeat("a-"),
    "at signs": _repeat("a@"),
    "domain without TLD": lambda size: "x@" + "a." * (size // 2),
    "digits": _repeat("1"),
    "base64": _base64,
    "colons": _repeat("a:"),
    "BEGIN without END": _repeat("-----BEGIN PRIVATE KEY-----"),
    "JWT prefixes": _repeat("eyJ-"),
    "key prefixes": _repeat("sk-"),
    "assignments": _repeat("token="),
    "bearer": _repeat("bearer "),
    # Rare anchors (the email's and IPv6's patterns try only the starts each can reach).
    "one at sign after a long run": lambda size: "a" * (size - 8) + "@b.cc",
    "sparse at signs in runs": _repeat("a" * 400 + "@"),
    "sparse colons": _repeat("a" * 400 + ":1:"),
}
# Text dense with plausible candidates (a phone, card, IBAN or address every 20-40 characters):
# each candidate must be validated (Luhn, mod 97, country lengths), so these cost more per
# megabyte, as a megabyte of real card numbers would; they must still scale linearly.
DENSE: dict[str, Callable[[int], str]] = {
    "spaced digits": _repeat("1 "),
    "dashed digits": _repeat("12-"),
    "plus digits": _repeat("+1"),
    "dotted digits": _repeat("1."),
    "IBAN-like": _repeat("DE00 "),
}


def _cpu_seconds(pattern: object, text: str, runs: int = 7) -> float:
    """Best of `runs` CPU times of finding every match: a busy machine inflates wall time."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for _span in pattern.spans(text):  # type: ignore[attr-defined]
            pass
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("name", list(ADVERSARIAL) + list(DENSE))
def test_every_pattern_is_linear_on_adversarial_megabytes(name: str) -> None:
    """Each pattern handles 1 MB of adversarial text in under 100 ms (a quadratic one takes
    minutes to hours; candidate-dense text, 300 ms), and 8x the text costs about 8x the time,
    far from the 64x of a quadratic pattern (the bound, 24x, leaves room for caches and noise)."""
    make, limit = (ADVERSARIAL[name], 0.1) if name in ADVERSARIAL else (DENSE[name], 0.3)
    megabyte, eighth = make(_MB), make(_MB // 8)
    for pattern in pii._PATTERNS:
        full = _cpu_seconds(pattern, megabyte)
        label = f"{pattern.kind} pattern {pattern.regex.pattern[:40]!r}"
        assert full < limit, f"{label} took {full:.3f}s on 1 MB"
        assert full < 24 * max(_cpu_seconds(pattern, eighth), 0.002), f"{label} is not linear"


_PLAIN_IPV6 = r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789abcdefAFgx:. _\n")), max_size=40))
def test_the_ipv6_pattern_matches_what_its_plain_form_matches(text: str) -> None:
    """The IPv6 pattern starts with a character, for speed; it finds the plain form's spans."""
    import re

    (fast,) = [p.regex for p in pii._PATTERNS if p.kind == "ip" and "A-Fa-f" in p.regex.pattern]
    assert [m.span() for m in fast.finditer(text)] == [m.span() for m in re.finditer(_PLAIN_IPV6, text)]


def test_redacting_a_megabyte_of_emails_is_fast() -> None:
    """Many matches: the overlap check between patterns is linear too."""
    text = "mail a@b.cc or 4111 1111 1111 1111 now " * (_MB // 40)
    started = time.process_time()
    redacted, counts = redact_text(text, "redact")
    assert time.process_time() - started < 5.0
    assert counts["email"] == _MB // 40 and counts["card"] == _MB // 40
    assert "@" not in redacted


_PIECES = ["bob@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "password=", "hunter22", "api_key: ",
           "sk-proj-abcdefghijklmnopqrstuvwx", "10.0.0.1", "::1", "fe80::1:2", "GB82 WEST 1234 5698 7654 32", " ",
           "\n", "Bearer ", "abcdefghijklmnopqrstu", "(020) 7946 0958", "1.2.3.4.5", "x", "\x00",
           "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "token", "=", "'", '"', "2024-01-02",
           "a.b", "12", ":"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=8).map("".join), min_size=1, max_size=12))
def test_a_batch_finds_what_each_text_finds_alone(texts: list[str]) -> None:
    """find_many joins a batch's texts to scan it once per pattern: every text's spans must be
    exactly those find() gives it alone, whatever sits at the edges (NULs, half a secret, a key
    block without its end)."""
    assert find_many(texts) == [find(text) for text in texts]


_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=6).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_TEXTS, _TEXTS, st.lists(st.sampled_from(["", "x", "call +44 20 7946 0958"]) | _TEXTS,
                                                   max_size=3)), min_size=1, max_size=8))
def test_remembered_passages_are_redacted_as_if_searched_afresh(parts: list[tuple[str, str, list[str]]]) -> None:
    """Passages come back event after event and their spans are remembered: a batch redacts as
    each event alone does (which searches everything), the first time and every time after."""
    policy = PiiPolicy.parse("input=hash,output=redact,context=redact", KEY)
    events = [TraceEvent(uuid.UUID(int=i), "t", datetime.now(UTC), "app", input=question, output=answer,
                         context=tuple(context)) for i, (question, answer, context) in enumerate(parts)]
    alone = [redact_event(event, policy) for event in events]
    for _ in range(2):
        assert pii.redact_events(events, policy) == alone
        assert pii.redact_events(events[::-1], policy) == alone[::-1]


def test_a_long_passage_is_searched_every_time_not_remembered() -> None:
    long = "see bob@example.com " + "x" * pii.CACHED_PASSAGE_CHARS
    # Unique, so no other test has remembered it; letters only, as a UUID's digits can read as a
    # phone number ("4930-8461": it failed a CI run so).
    short = f"short passage {uuid.uuid4().hex.translate(str.maketrans('0123456789', 'ghijklmnop'))} with ann@example.com"
    event = TraceEvent(uuid.UUID(int=1), "t", datetime.now(UTC), "app", input="", output="", context=(long, short))
    (redacted,) = pii.redact_events([event], PiiPolicy())
    assert redacted.context == ("see [EMAIL] " + "x" * pii.CACHED_PASSAGE_CHARS, short.replace("ann@example.com", "[EMAIL]"))
    remembered = pii._passage_spans
    assert remembered.get(short) == [pii.Span("email", len(short) - 15, len(short))]
    assert remembered.get(long) is None and len(remembered) <= pii.CACHED_PASSAGES


_ANCHORED = [p for p in pii._PATTERNS if isinstance(p, pii._Anchored)]
_NEAR_ANCHORS = st.lists(st.sampled_from([*"a.-_+@:1fF Z\x00é", "@b.cc", "a@b", "::", "1:2:3::4", "x.y@z.org"]),
                         max_size=30).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_NEAR_ANCHORS)
@example("a@b.cd.ef@g.hi")  # the second @'s run starts inside the first match: no second match
@example("a@b.cd.e@f.gh")  # the first @ makes no match; the second's run reaches back to it
@example("1:2:3:4:5:6:7:8:9 ::1 fe80::1:")
def test_anchored_patterns_find_what_a_scan_finds(text: str) -> None:
    """The email and IPv6 patterns, tried only at the starts each anchor can reach, find what
    the same pattern scanning every position finds: the same spans, in the same order."""
    assert {p.kind for p in _ANCHORED} == {"email", "ip"}
    for pattern in _ANCHORED:
        scanned = [m.span() for m in pattern.regex.finditer(text) if pattern.valid(m.group())]
        assert list(pattern.anchored_spans(text)) == scanned, pattern.kind
        assert list(pattern.spans(text)) == scanned, pattern.kind
