"""Find and redact personal data and secrets before anything is stored. Pure functions, no I/O.

Kinds: email, phone, card (Luhn-checked), iban (mod-97-checked), ip (v4 and v6, parsed), secret
(API keys and tokens of the common providers, JWTs, bearer tokens, private keys, and values of
`password=` / `api_key:` style assignments).

Each text field has a policy: `redact` replaces a match with `[EMAIL]`, `hash` with `[EMAIL:5f2c…]`
(a 96-bit BLAKE2b digest keyed with --pii-hash-key, so equal values stay joinable without being
readable; without a key anyone could hash a guess and compare, so `hash` requires one), `keep`
leaves it but still counts it. The counts per field and kind are stored with the event.

Examples:
    >>> redact_text("mail bob@example.com or call +44 20 7946 0958", "redact")
    ('mail [EMAIL] or call [PHONE]', {'email': 1, 'phone': 1})
    >>> redact_text("card 4111 1111 1111 1111, not 4111 1111 1111 1112", "redact")[0]
    'card [CARD], not 4111 1111 1111 1112'
    >>> redact_text("key sk-proj-abcdefghijklmnopqrstuvwx", "hash", key=b"k")[0]  # doctest: +ELLIPSIS
    'key [SECRET:...]'
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from llmwatch.core.events import SpanEvent, TraceEvent
from llmwatch.core.lru import Lru
from llmwatch.core.pii_policy import POLICIES, PiiPolicy

__all__ = ["KINDS", "POLICIES", "PiiPolicy", "find", "find_many", "redact_bytes", "redact_event",
           "redact_events", "redact_span", "redact_text"]

# The policy is configuration (llmwatch.core): settings parse it, this module applies it.



# Validators run once per candidate match, so a text full of candidates costs what they cost:
# each is a few C-level string operations, no Python loop over characters.
_NOT_DIGITS = str.maketrans("", "", " -")
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # the digit sum of 2*d, as a digit
# A list indexed by code point translates 2.5x faster than maketrans' dict: A -> "10" ... Z -> "35".
_IBAN_DIGITS = [chr(c) if not 65 <= c <= 90 else str(c - 55) for c in range(128)]
# The length of each country's IBAN (SWIFT's IBAN registry): most candidates fail here, before
# the checksum.
_IBAN_LENGTHS = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BI=27, BR=29, BY=28, CH=21,
    CR=22, CY=28, CZ=24, DE=22, DJ=27, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FK=18, FO=18,
    FR=27, GB=22, GE=22, GI=23, GL=18, GR=27, GT=28, HN=28, HR=21, HU=28, IE=22, IL=23, IQ=23,
    IS=26, IT=27, JO=30, KW=30, KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20, LV=21, LY=25, MC=27,
    MD=24, ME=22, MK=19, MN=20, MR=27, MT=31, MU=30, NI=28, NL=18, NO=15, OM=23, PK=24, PL=28,
    PS=29, PT=25, QA=29, RO=24, RS=22, RU=33, SA=24, SC=31, SD=18, SE=24, SI=19, SK=24, SM=27,
    SO=23, ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20, YE=30,
)


def _luhn_ok(digits: str) -> bool:
    raw = digits.encode()
    plain, doubled = raw[-1::-2], raw[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(plain) + sum(doubled) - 48 * len(raw)) % 10 == 0


def _card_ok(match: str) -> bool:
    digits = match.translate(_NOT_DIGITS)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _iban_ok(match: str) -> bool:
    iban = match.replace(" ", "")
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_DIGITS)) % 97 == 1


def _ipv4_ok(match: str) -> bool:
    return all(len(part) == 1 or (part[0] != "0" and int(part) < 256) for part in match.split("."))


def _ip_ok(match: str) -> bool:
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")
_PHONE_PUNCTUATION = str.maketrans("", "", " .-+()")


def _phone_ok(match: str) -> bool:
    return 7 <= len(match.translate(_PHONE_PUNCTUATION)) <= 15 and not _DATE.fullmatch(match)


@dataclass(frozen=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    valid: Callable[[str], bool] = lambda _: True
    group: int = 0  # the part to replace (a `password=` assignment keeps its name)

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of each valid match, in order, none overlapping."""
        for match in self.regex.finditer(text):
            if self.valid(match.group(self.group)):
                yield match.span(self.group)


class _Block(_Pattern):
    """A block between a BEGIN and an END line. A lazy `BEGIN.*?END` regex would rescan the rest
    of the text from every BEGIN that has no END: quadratic, so the END is found with str.find."""

    def __init__(self, kind: str, begin: str, end: str) -> None:
        super().__init__(kind, re.compile(begin))
        object.__setattr__(self, "end", re.compile(end))

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        at = 0
        while (begin := self.regex.search(text, at)) is not None:
            end = self.end.search(text, begin.end())  # type: ignore[attr-defined]
            if end is None:
                return  # no later BEGIN can find an END either
            yield begin.start(), end.end()
            at = end.end()


@dataclass(frozen=True)
class _Anchored(_Pattern):
    """A pattern every match of which holds something rare, its anchor: an email its `@`, an IPv6
    address a colon followed by up to four hex digits and a colon. Scanning from every position
    costs ~25 ns per character whatever the text (the pattern's first character is a letter or
    digit, so the engine skips few: 6.0 µs per demo event for the email, 5.4 for IPv6). Where the
    anchor's first character is rare, `anchor` (which starts with it, and the engine finds a
    literal fast) finds each anchor in order, and the pattern is tried only at the positions
    `starts(text, anchor_at, lo)` names, in ascending order from `lo`: the only ones a match
    holding that anchor can start at. Where the character is common (one in SPARSE or more), one
    scan is cheaper than a Python step per anchor, and the pattern scans. Either way the spans
    are finditer's: the leftmost match, then the next one searched from its end."""

    anchor: re.Pattern[str] = dataclasses.field(kw_only=True)
    starts: Callable[[str, int, int], Iterable[int]] = dataclasses.field(kw_only=True)

    SPARSE = 256

    def __post_init__(self) -> None:
        assert re.escape(self.anchor.pattern[0]) == self.anchor.pattern[0], "the anchor starts with a literal"

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        if text.count(self.anchor.pattern[0]) * self.SPARSE > len(text):
            return super().spans(text)
        return self.anchored_spans(text)

    def anchored_spans(self, text: str) -> Iterator[tuple[int, int]]:
        end = 0  # where the last match ended: the next starts there or later
        for found in self.anchor.finditer(text):
            if found.start() < end:
                continue  # inside the last match
            for start in self.starts(text, found.start(), end):
                match = self.regex.match(text, start)
                if match is not None:
                    end = match.end()
                    if self.valid(match.group()):
                        yield match.span()
                    break


# Every pattern runs in linear time, whatever the text (tests/detectors/test_pii.py feeds each
# 1 MB adversarial strings):
# - a run of characters a pattern could start in is entered at its first character only: the
#   "not preceded by" check sits just after that character (`x(?<!\w.)` rather than `\bx`), which
#   also lets the regex engine skip every position whose character cannot start a match;
# - repetition is bounded where it can be;
# - no pattern searches ahead for a terminator from more than one start.
_TOKEN = "A-Za-z0-9_-"
_LOCAL = "A-Za-z0-9!#$%&'*+/=?^_`{|}~.-"
_AFTER = rf"(?<![{_TOKEN}].)"  # the character just matched starts a token
_WORD = r"(?<!\w.)"  # the character just matched starts a word (\b before it)
_PHONE_REST = r"\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)"
_LOCAL_CHARACTERS = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~.-"  # _LOCAL, spelt out


def _email_starts(text: str, at: int, lo: int) -> list[int]:
    """Where an email with its `@` at `at` can start, from `lo` on: at the run of local-part
    characters just before it (anywhere else, the pattern's look-behind or its `@` fails). Read
    backwards in doubling steps, so a run costs its length, once: no run crosses an `@`."""
    start, step = at, 16
    while start > lo:
        chunk = max(lo, start - step)
        kept = len(text[chunk:start].rstrip(_LOCAL_CHARACTERS))
        if kept:
            start = chunk + kept
            break
        start, step = chunk, 2 * step
    return [start] if start < at else []


_PATTERNS = (
    _Block("secret", r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----", r"-----END [A-Z ]{0,40}PRIVATE KEY-----"),
    _Pattern(
        "secret",
        re.compile(
            rf"s{_AFTER}k-(?:proj-|ant-)?[{_TOKEN}]{{20,}}|A{_AFTER}(?:KIA[0-9A-Z]{{16}}|Iza[{_TOKEN}]{{35}})"
            rf"|g{_AFTER}(?:h[pousr]_[A-Za-z0-9]{{36,}}|lpat-[{_TOKEN}]{{20,}})|x{_AFTER}ox[abprs]-[A-Za-z0-9-]{{10,}}"
            rf"|e{_AFTER}yJ[{_TOKEN}]{{8,}}\.[{_TOKEN}]{{8,}}\.[{_TOKEN}]{{8,}}"
        ),
    ),
    _Pattern("secret", re.compile(rf"[bB]{_WORD}(?i:earer)\s+([A-Za-z0-9._~+/-]{{16,}}=*)"), group=1),
    # `api_key=`, `secret:`, `token=`, `password:` and their values: one pattern per keyword, so
    # each scan skips every character that cannot start its keyword (one pattern for all four
    # stops at every a, s, t and p: 100 ms on a megabyte of "a.a.a.", twice this).
    *(
        _Pattern("secret", re.compile(rf"{first}{_WORD}(?i:{rest})\b[\"']?\s*[:=]\s*[\"']?([^\s\"',;\x00]{{6,}})"), group=1)
        for first, rest in (("[aA]", "pi[_-]?key"), ("[sS]", "ecret"), ("[tT]", "oken"), ("[pP]", "assw(?:or)?d|wd"))
    ),
    _Anchored(
        "email",
        # Domain labels are taken possessively (no backtracking over thousands of labels), each
        # only when another label follows its dot, so a sentence's full stop stays outside.
        re.compile(rf"[{_LOCAL}](?<![{_LOCAL}].)[{_LOCAL}]*@(?:[A-Za-z0-9-]+\.(?=[A-Za-z0-9-]))++[A-Za-z]{{2,}}\b"),
        anchor=re.compile("@"),
        starts=_email_starts,
    ),
    _Pattern(
        "iban",
        re.compile(rf"[A-Z]{_WORD}[A-Z]\d{{2}}(?:[A-Z0-9]{{11,30}}|(?: [A-Z0-9]{{4}}){{2,7}}(?: [A-Z0-9]{{1,3}})?)\b"),
        _iban_ok,
    ),
    _Pattern("card", re.compile(rf"\d{_WORD}(?:[ -]?\d){{12,18}}\b"), _card_ok),
    # Not inside a longer dotted number (a version, an OID): "1.2.3.4.5" is no address.
    _Pattern("ip", re.compile(r"\d(?<![\d.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\d|\.\d)"), _ipv4_ok),
    # IPv6: `(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])`, with its first group
    # written to start with a character (a hex digit or a colon) so that the scan skips the rest.
    _Anchored("ip", re.compile(r"(?:[0-9A-Fa-f](?<![\w:].)[0-9A-Fa-f]{0,3}:|:(?<![\w:].))(?:[0-9A-Fa-f]{0,4}:){1,6}"
                               r"[0-9A-Fa-f]{0,4}(?![\w:])"),
              _ip_ok,
              # A match's first colon, followed by its second: at most four hex digits come before it.
              anchor=re.compile(r":(?=[0-9A-Fa-f]{0,4}:)"),
              starts=lambda _text, at, lo: range(max(lo, at - 4), at + 1)),
    # Phone numbers: +CC, (area) or plain digits, not preceded by a word character or '+'. One
    # pattern per first character, so the + and ( scans jump between those characters and the
    # digit scan tries one thing per digit (one pattern for all three: 110 ms on a megabyte of
    # digits, twice this).
    _Pattern(
        "phone",
        re.compile(rf"\+(?<![\w+].)(?:\d{{7,15}}(?!\w)|\d{{1,3}}[ .-]?(?:\(\d{{1,4}}\)[ .-]?)?{_PHONE_REST})"),
        _phone_ok,
    ),
    _Pattern("phone", re.compile(rf"\((?<![\w+].)\d{{1,4}}\)[ .-]?{_PHONE_REST}"), _phone_ok),
    _Pattern("phone", re.compile(r"\d(?<![\w+]\d)\d{1,3}(?:[ .-]\d{2,4}){1,4}(?!\w)"), _phone_ok),
)

KINDS = tuple(dict.fromkeys(p.kind for p in _PATTERNS))


@dataclass(frozen=True, slots=True)
class Span:
    kind: str
    start: int
    end: int


def find(text: str) -> list[Span]:
    """Non-overlapping PII spans in `text`, in order of position. Earlier patterns claim their
    spans first; a later pattern's match that overlaps a claimed span is dropped. Both lists are
    in position order, so the overlap check walks them together: linear, however many matches."""
    taken: list[tuple[int, int, str]] = []
    for pattern in _PATTERNS:
        accepted, i = [], 0
        for start, end in pattern.spans(text):
            while i < len(taken) and taken[i][1] <= start:
                i += 1
            if i < len(taken) and taken[i][0] < end:
                continue
            accepted.append((start, end, pattern.kind))
        if accepted:
            taken = sorted(taken + accepted)
    return [Span(kind, start, end) for start, end, kind in taken]


# Texts of a batch are joined with this between them, so each pattern scans the batch once
# instead of once per text (2.5x less time on demo traffic). No pattern matches a NUL (the
# assignments' values stop at one), and on either side of it every look-around sees what it
# sees at a string's edge, so each text's spans are those find() gives it alone.
_SEPARATOR = "\x00\x00"


def find_many(texts: Sequence[str]) -> list[list[Span]]:
    """find() of each text, each pattern scanning the batch once. A text holding a key block
    is searched alone: a block's END is looked for wherever it is."""
    found: list[list[Span]] = [[] for _ in texts]
    joined = [i for i, text in enumerate(texts) if text]
    batch = _SEPARATOR.join([texts[i] for i in joined])
    alone: list[int] = []
    if "-----BEGIN" in batch:  # rare; the separator holds no "-", so a BEGIN lies within one text
        alone = [i for i in joined if "-----BEGIN" in texts[i]]
        joined = [i for i in joined if "-----BEGIN" not in texts[i]]
        batch = _SEPARATOR.join([texts[i] for i in joined])
    starts = list(itertools.accumulate((len(texts[i]) + len(_SEPARATOR) for i in joined), initial=0))[:-1]
    k = 0
    for span in find(batch):
        while k + 1 < len(starts) and starts[k + 1] <= span.start:
            k += 1
        found[joined[k]].append(Span(span.kind, span.start - starts[k], span.end - starts[k]))
    for i in alone:
        found[i] = find(texts[i])
    return found


# A RAG app retrieves from a corpus, so the same passages come back event after event: each one's
# spans are remembered (a pure function of its text; the policy is applied afterwards). Passages
# of up to 4,096 characters, 4,096 of them: ~5 MB for chunks of 1,000 characters, ~18 MB at most
# (of ASCII text: the texts are the keys).
CACHED_PASSAGES = 4096
CACHED_PASSAGE_CHARS = 4096


_passage_spans: Lru[str, list[Span]] = Lru(CACHED_PASSAGES)


def _digest(value: str, key: bytes) -> str:
    return hashlib.blake2b(value.encode(), digest_size=12, key=key[:64]).hexdigest()


def redact_text(text: str, policy: str, key: bytes = b"") -> tuple[str, dict[str, int]]:
    """Apply `policy` to every PII span of `text`; returns the new text and counts per kind."""
    if not text:
        return text, {}
    return _apply(text, find(text), policy, key)


def _apply(text: str, spans: list[Span], policy: str, key: bytes) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    for span in spans:
        counts[span.kind] = counts.get(span.kind, 0) + 1
    if policy == "keep" or not spans:
        return text, counts
    parts, at = [], 0
    for span in spans:
        tag = span.kind.upper()
        if policy == "hash":
            tag = f"{tag}:{_digest(text[span.start:span.end], key)}"
        parts += [text[at : span.start], f"[{tag}]"]
        at = span.end
    parts.append(text[at:])
    return "".join(parts), counts


# A JSON string literal. The two alternatives cannot both match a character: linear.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _inside_strings(text: str, spans: list[Span]) -> list[Span]:
    """The spans that lie inside one JSON string literal of `text` (valid JSON). Both lists are
    in position order, so they are walked together."""
    kept: list[Span] = []
    literals = _JSON_STRING.finditer(text)
    literal = next(literals, None)
    for span in spans:
        while literal is not None and literal.end() <= span.start:
            literal = next(literals, None)
        if literal is not None and literal.start() < span.start and span.end < literal.end():
            kept.append(span)
    return kept


def redact_bytes(raw: bytes, policy: str, key: bytes = b"") -> bytes:
    """Redact arbitrary bytes (a rejected message); undecodable bytes pass through untouched.

    Bytes that are valid JSON stay valid JSON: only PII inside its strings is redacted, as in an
    accepted event, so a number (an epoch-ms timestamp that happens to pass Luhn) is never
    replaced by a bare `[CARD]` that would leave the DLQ record unreadable."""
    text = raw.decode("utf-8", "surrogateescape")
    if not text:
        return raw
    spans = find(text)
    if spans and _is_json(raw):
        spans = _inside_strings(text, spans)
    return _apply(text, spans, policy, key)[0].encode("utf-8", "surrogateescape")


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _merge(counts: dict[str, int], field: str, found: dict[str, int]) -> None:
    for kind, n in found.items():
        counts[f"{field}.{kind}"] = counts.get(f"{field}.{kind}", 0) + n


def _redact_all(texts: Iterable[str], policy: str, key: bytes, field: str, counts: dict[str, int]) -> list[str]:
    out = []
    for text in texts:
        new, found = redact_text(text, policy, key)
        _merge(counts, field, found)
        out.append(new)
    return out


def _redact_tree(value: Any, policy: str, key: bytes, field: str, counts: dict[str, int]) -> Any:
    if isinstance(value, str):
        return _redact_all([value], policy, key, field, counts)[0]
    if isinstance(value, dict):
        return {k: _redact_tree(v, policy, key, field, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, policy, key, field, counts) for v in value]
    return value


def _trace_fields(event: TraceEvent, policy: PiiPolicy) -> list[tuple[str, str, list[str]]]:
    """(field, policy, texts) of each free-text part of an event, in the order they are counted."""
    strictest = policy.strictest
    return [
        ("input", policy.input, [event.input]),
        ("messages", policy.input, [c for _, c in event.input_messages]),
        ("output", policy.output, [event.output]),
        ("context", policy.context, list(event.context)),
        ("error", strictest, [event.error]),
        ("tags", strictest, list(event.tags)),
        ("tags", strictest, list(event.tags.values())),
        ("release", strictest, [event.environment, event.prompt_id]),
    ]


def redact_events(events: Sequence[TraceEvent], policy: PiiPolicy) -> list[TraceEvent]:
    """redact_event of each event, with every pattern run once over the whole batch's text."""
    layouts = [_trace_fields(event, policy) for event in events]
    flat = [[text for _, _, part in layout for text in part] for layout in layouts]
    texts = [text for event_texts in flat for text in event_texts]
    spans = _spans_of(texts, [event.context for event in events])
    redacted = []
    at = 0
    for event, layout, event_texts in zip(events, layouts, flat):
        size = len(event_texts)
        if not event.extra and not event.pii and not any(spans[at : at + size]):
            redacted.append(event)  # most events hold nothing to redact: no copy
            at += size
            continue
        texts_in, spans_in = iter(texts[at : at + size]), iter(spans[at : at + size])
        at += size
        counts: dict[str, int] = {}
        parts = []
        for field, field_policy, part in layout:
            out = []
            for _ in part:
                new, found = _apply(next(texts_in), next(spans_in), field_policy, policy.key)
                _merge(counts, field, found)
                out.append(new)
            parts.append(out)
        [new_input], messages, [new_output], context, [new_error], tag_keys, tag_values, release = parts
        new_extra = _redact_tree(event.extra, policy.strictest, policy.key, "extra", counts)
        redacted.append(replace(
            event,
            error=new_error,
            tags=dict(zip(tag_keys, tag_values)),
            environment=release[0],
            prompt_id=release[1],
            extra=new_extra,
            input=new_input,
            input_messages=tuple((role, text) for (role, _), text in zip(event.input_messages, messages)),
            output=new_output,
            context=tuple(context),
            pii=counts,
        ))
    return redacted


def _spans_of(texts: list[str], contexts: list[tuple[str, ...]]) -> list[list[Span]]:
    """find_many(texts), with the retrieved passages among them (`contexts`) remembered."""
    passages = _passage_spans.remembered((p for context in contexts for p in context), find_many,
                                         keep=lambda p: len(p) <= CACHED_PASSAGE_CHARS)
    rest = [i for i, text in enumerate(texts) if text not in passages]
    searched = dict(zip(rest, find_many([texts[i] for i in rest])))
    return [passages[text] if text in passages else searched[i] for i, text in enumerate(texts)]


def redact_event(event: TraceEvent, policy: PiiPolicy) -> TraceEvent:
    """A copy of a TraceEvent with PII handled per field and counted in `event.pii`. Free-text
    fields beyond input, output and context (error, tag keys and values, extra, environment,
    the release's prompt_id) get the strictest policy; user_id and session_id are the app's own
    identifiers and are kept."""
    return redact_events([event], policy)[0]


def redact_span(span: SpanEvent, policy: PiiPolicy) -> SpanEvent:
    """A copy of a span with PII handled: its input and output under the input and output
    policies (a tool's arguments and results carry what users typed and what they get back),
    its error and attributes under the strictest."""
    counts: dict[str, int] = {}
    (new_input,) = _redact_all([span.input], policy.input, policy.key, "input", counts)
    (new_output,) = _redact_all([span.output], policy.output, policy.key, "output", counts)
    strictest = policy.strictest
    (new_error, new_name) = _redact_all([span.error, span.name], strictest, policy.key, "span", counts)
    keys = _redact_all(span.attributes, strictest, policy.key, "attributes", counts)
    values = _redact_all(span.attributes.values(), strictest, policy.key, "attributes", counts)
    return replace(span, input=new_input, output=new_output, error=new_error, name=new_name,
                   attributes=dict(zip(keys, values)), pii=counts)
