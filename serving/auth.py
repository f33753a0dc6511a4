"""API keys with scopes: who may triage, who may write training feedback, who may reload models.

Scopes (one per key list in the settings):

* ``triage``   — ``TRIAGE_API_KEYS``: /v1/triage, /v1/triage/batch, /v1/model, /v1/alerts;
* ``feedback`` — ``TRIAGE_FEEDBACK_KEYS``: POST /v1/feedback, the path into the training data;
* ``metrics``  — ``TRIAGE_METRICS_KEYS``: GET /metrics;
* ``admin``    — ``TRIAGE_ADMIN_KEYS``: POST /v1/admin/reload, and every scope above.

A key listed in several lists has several scopes. An entry is ``secret`` or ``id:secret``; the id
(given, or ``key-`` + 8 hex digits of the secret's SHA-256) is what the access log and feedback
records carry, never the secret.

Keys are compared as bytes with ``hmac.compare_digest`` against every configured key: a header that
is not ASCII (``X-API-Key: \\xe9``) is simply a wrong key (401), not a ``TypeError`` (it was a 500).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

SCOPES = ("triage", "feedback", "metrics", "admin")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret: bytes
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def parse_entry(entry: str) -> tuple[str, str]:
    """``id:secret`` → (id, secret); a bare secret gets a derived id."""
    key_id, sep, secret = entry.partition(":")
    if sep and key_id.strip() and secret:
        return key_id.strip(), secret
    return "key-" + hashlib.sha256(entry.encode("utf-8")).hexdigest()[:8], entry


class KeyRing:
    """Every configured key with its scopes; built once from the settings."""

    def __init__(self, lists: dict[str, list[str]]) -> None:
        merged: dict[bytes, tuple[str, set[str]]] = {}
        for scope, entries in lists.items():
            if scope not in SCOPES:
                raise ValueError(f"unknown scope {scope!r}; known: {SCOPES}")
            for entry in entries:
                key_id, secret = parse_entry(entry)
                raw = secret.encode("utf-8")
                known = merged.setdefault(raw, (key_id, set()))
                if known[0] != key_id:
                    raise ValueError(f"one secret is listed under two ids ({known[0]!r}, {key_id!r})")
                known[1].add(scope)
        ids = [key_id for key_id, _ in merged.values()]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"key ids must be unique: {duplicated}")
        self.keys = [ApiKey(key_id, raw, frozenset(scopes)) for raw, (key_id, scopes) in merged.items()]
        self.configured = {scope: any(scope in k.scopes for k in self.keys) for scope in SCOPES}

    @classmethod
    def from_settings(cls, settings) -> KeyRing:
        return cls(
            {
                "triage": settings.api_keys,
                "feedback": settings.feedback_keys,
                "metrics": settings.metrics_keys,
                "admin": settings.admin_keys,
            }
        )

    @property
    def any_configured(self) -> bool:
        return bool(self.keys)

    def authenticate(self, given: str | None) -> ApiKey | None:
        """The key whose secret equals ``given`` (a header value, latin-1 decoded by the server)."""
        if not given:
            return None
        try:
            raw = given.encode("latin-1")  # the header's own bytes back
        except UnicodeEncodeError:  # not from an HTTP header: compare its UTF-8 bytes
            raw = given.encode("utf-8", errors="surrogatepass")
        found = None
        for key in self.keys:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(raw, key.secret):
                found = key
        return found


class RateLimiter:
    """Token bucket per key: ``burst`` at once, then ``per_minute``. In-process (per worker)."""

    def __init__(self, per_minute: int, burst: int, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed (a token is taken); else the seconds until the next token."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
