"""Who may use the console and what they may do. Pure: no Streamlit here.

Users come from settings (`--console-users name:role:HASH,...`, hashes made by
`llmwatch console hash-password`), or from an OIDC provider configured in Streamlit's
secrets, whose e-mail addresses map to roles (`--console-oidc-roles`). Roles are ordered:
a reviewer may do what a viewer may, an admin what a reviewer may.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from llmwatch.core.errors import ConfigError

__all__ = ["ROLES", "LoginThrottle", "User", "allowed", "hash_password", "oidc_role", "parse_users", "verify"]

ROLES = ("viewer", "reviewer", "admin")

# What each action needs; pages show the buttons only to those who may press them.
NEEDS = {
    "view": "viewer",
    "query": "viewer",
    "review": "reviewer",
    "acknowledge": "reviewer",
    "export": "reviewer",
    "silence": "admin",
    "release": "admin",
}

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str = ""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash`, salt and hash in base64."""
    if not password:
        raise ConfigError("a password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def verify(password: str, password_hash: str) -> bool:
    """Constant-time check of a password against hash_password's output; False for any
    malformed hash rather than an error (a typo in settings must not let anyone in)."""
    try:
        scheme, n, r, p, salt, digest = password_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def parse_users(spec: str) -> dict[str, User]:
    """`name:role:hash,...` into users by name; ConfigError naming the bad entry."""
    users: dict[str, User] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"console user {entry.split(':')[0]!r}: expected name:role:hash")
        name, role, password_hash = parts
        if role not in ROLES:
            raise ConfigError(f"console user {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
        if not password_hash.startswith("scrypt$") or password_hash.count("$") != 5:
            raise ConfigError(f"console user {name!r}: the hash is not from `llmwatch console hash-password`")
        if name in users:
            raise ConfigError(f"console user {name!r} is listed twice")
        users[name] = User(name, role, password_hash)
    return users


def oidc_role(email: str | None, spec: str, default: str = "", *, verified: bool = True) -> str:
    """The role of an OIDC login from `email:role,...` (`*@example.com:viewer` matches a
    domain); `default` (often empty: no access) when nothing matches. An address the provider
    has not verified (`email_verified` not true) gets no role: anyone can type anyone's address
    into an account at many providers."""
    if not email or not verified:
        return default
    email = email.lower()
    best = default
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        pattern, _, role = entry.rpartition(":")
        if role not in ROLES:
            raise ConfigError(f"console OIDC role entry {entry!r}: role must be one of {', '.join(ROLES)}")
        pattern = pattern.lower()
        if pattern == email:
            return role  # an exact address beats a domain rule
        if pattern.startswith("*@") and email.endswith(pattern[1:]):
            best = role
    return best


class LoginThrottle:
    """Failed password sign-ins per user name, across every browser session of the console
    process: after `max_failures` within `window_s` the name is locked for `lockout_s`, whatever
    session or address the next guess comes from. Names that do not exist are counted alike, so
    the lockout does not tell them apart."""

    def __init__(self, max_failures: int = 5, window_s: float = 900.0, lockout_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked_for(self, name: str, now: float) -> float:
        """Seconds until `name` may try again (0: now)."""
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < self.window_s]
            self._failures[name] = recent
            if len(recent) < self.max_failures:
                return 0.0
            return max(0.0, recent[-1] + self.lockout_s - now)

    def failed(self, name: str, now: float) -> None:
        with self._lock:
            failures = self._failures.setdefault(name, [])
            failures.append(now)
            del failures[: -self.max_failures]
            if len(self._failures) > 100_000:  # a spray of names: forget the oldest
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


def allowed(role: str, action: str) -> bool:
    """Whether `role` may do `action` (see NEEDS)."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(NEEDS[action])
