"""The PII policy: what to do with personal data in each text field of an event. Parsed from
settings here; applied by llmwatch.detectors.pii."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIELDS", "POLICIES", "PiiPolicy"]

POLICIES = ("redact", "hash", "keep")
FIELDS = ("input", "output", "context")


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
            return cls(spec, spec, spec, key.encode())._checked()
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
        return cls(**fields, key=key.encode())._checked()

    def _checked(self) -> PiiPolicy:
        if "hash" in (self.input, self.output, self.context) and len(self.key) < 16:
            msg = "the PII policy `hash` needs a secret --pii-hash-key of 16 characters or more"
            raise ValueError(msg)
        return self

    @property
    def strictest(self) -> str:
        """The policy for text whose field is unknown (a message that failed to parse)."""
        chosen = {self.input, self.output, self.context}
        return next(p for p in POLICIES if p in chosen)
