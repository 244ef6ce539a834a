"""Find and redact personal data and secrets before anything is stored. Pure functions, no I/O.

Kinds: email, phone, card (Luhn-checked), iban (mod-97-checked), ip (v4 and v6, parsed), secret
(API keys and tokens of the common providers, JWTs, bearer tokens, private keys, and values of
`password=` / `api_key:` style assignments).

Each text field has a policy: `redact` replaces a match with `[EMAIL]`, `hash` with `[EMAIL:5f2c…]`
(a keyed BLAKE2b digest, so equal values stay joinable without being readable), `keep` leaves it
but still counts it. The counts per field and kind are stored with the event.

Examples:
    >>> redact_text("mail bob@example.com or call +44 20 7946 0958", "redact")
    ('mail [EMAIL] or call [PHONE]', {'email': 1, 'phone': 1})
    >>> redact_text("card 4111 1111 1111 1111, not 4111 1111 1111 1112", "redact")[0]
    'card [CARD], not 4111 1111 1111 1112'
    >>> redact_text("key sk-proj-abcdefghijklmnopqrstuvwx", "hash", key=b"k")[0]
    'key [SECRET:c6c5565834]'
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

__all__ = ["KINDS", "POLICIES", "PiiPolicy", "find", "redact_bytes", "redact_event", "redact_text"]

POLICIES = ("redact", "hash", "keep")
FIELDS = ("input", "output", "context")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _iban_ok(match: str) -> bool:
    iban = match.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ip_ok(match: str) -> bool:
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")


def _phone_ok(match: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in match) <= 15 and not _DATE.fullmatch(match)


@dataclass(frozen=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    valid: Callable[[str], bool] = lambda _: True
    group: int = 0  # the part to replace (a `password=` assignment keeps its name)


# Order matters: earlier patterns claim their spans first (a card number is not also a phone).
_PATTERNS = (
    _Pattern(
        "secret",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    ),
    _Pattern(
        "secret",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
            r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        ),
    ),
    _Pattern("secret", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)"), group=1),
    _Pattern(
        "secret",
        re.compile(
            r"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d|pwd)\b[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{6,})"
        ),
        group=1,
    ),
    _Pattern(
        "email",
        re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ),
    _Pattern("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b"), _iban_ok),
    _Pattern("card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _card_ok),
    _Pattern("ip", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), _ip_ok),
    _Pattern("ip", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ip_ok),
    _Pattern(
        "phone",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)"
            r"|(?<![\w+])\+\d{7,15}(?!\w)"
        ),
        _phone_ok,
    ),
)

KINDS = tuple(dict.fromkeys(p.kind for p in _PATTERNS))


@dataclass(frozen=True, slots=True)
class Span:
    kind: str
    start: int
    end: int


def find(text: str) -> list[Span]:
    """Non-overlapping PII spans in `text`, in order of position."""
    spans: list[Span] = []
    taken: list[tuple[int, int]] = []
    for pattern in _PATTERNS:
        for match in pattern.regex.finditer(text):
            start, end = match.span(pattern.group)
            if any(start < e and s < end for s, e in taken) or not pattern.valid(match.group(pattern.group)):
                continue
            taken.append((start, end))
            spans.append(Span(pattern.kind, start, end))
    return sorted(spans, key=lambda s: s.start)


def _digest(value: str, key: bytes) -> str:
    return hashlib.blake2b(value.encode(), digest_size=5, key=key[:64]).hexdigest()


def redact_text(text: str, policy: str, key: bytes = b"") -> tuple[str, dict[str, int]]:
    """Apply `policy` to every PII span of `text`; returns the new text and counts per kind."""
    if not text:
        return text, {}
    spans = find(text)
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


def redact_bytes(raw: bytes, policy: str, key: bytes = b"") -> bytes:
    """Redact arbitrary bytes (a rejected message): undecodable bytes pass through untouched."""
    text = raw.decode("utf-8", "surrogateescape")
    return redact_text(text, policy, key)[0].encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class PiiPolicy:
    """What to do with PII in each text field of an event."""

    input: str = "redact"
    output: str = "redact"
    context: str = "redact"
    key: bytes = b""

    @classmethod
    def parse(cls, spec: str, key: str = "") -> PiiPolicy:
        """`redact` (every field), or `input=hash,output=redact,context=keep` (unnamed fields
        default to redact). Raises ValueError naming what is wrong."""
        spec = spec.strip()
        if spec in POLICIES:
            return cls(spec, spec, spec, key.encode())
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or name not in FIELDS or value not in POLICIES:
                msg = (
                    f"bad PII policy {part!r}: use one of {'/'.join(POLICIES)}, "
                    f"or field=policy pairs with fields {', '.join(FIELDS)}"
                )
                raise ValueError(msg)
            fields[name] = value
        return cls(**fields, key=key.encode())

    @property
    def strictest(self) -> str:
        """The policy for text whose field is unknown (a message that failed to parse)."""
        chosen = {self.input, self.output, self.context}
        return next(p for p in POLICIES if p in chosen)


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


def redact_event(event, policy: PiiPolicy):  # type: ignore[no-untyped-def]
    """A copy of a TraceEvent with PII handled per field and counted in `event.pii`. Free-text
    fields beyond input, output and context (error, tag values, extra) get the strictest policy;
    user_id and session_id are the app's own identifiers and are kept."""
    counts: dict[str, int] = {}
    (new_input,) = _redact_all([event.input], policy.input, policy.key, "input", counts)
    message_texts = _redact_all((c for _, c in event.input_messages), policy.input, policy.key, "messages", counts)
    (new_output,) = _redact_all([event.output], policy.output, policy.key, "output", counts)
    new_context = _redact_all(event.context, policy.context, policy.key, "context", counts)
    strictest = policy.strictest
    (new_error,) = _redact_all([event.error], strictest, policy.key, "error", counts)
    new_tags = _redact_tree(event.tags, strictest, policy.key, "tags", counts)
    new_extra = _redact_tree(event.extra, strictest, policy.key, "extra", counts)
    return replace(
        event,
        error=new_error,
        tags=new_tags,
        extra=new_extra,
        input=new_input,
        input_messages=tuple((role, text) for (role, _), text in zip(event.input_messages, message_texts)),
        output=new_output,
        context=tuple(new_context),
        pii=counts,
    )
