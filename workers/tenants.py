"""API keys: bearer tokens mapped to tenants, stored hashed in Redis.

A key is ``vmk_<key_id>_<secret>``: ``key_id`` (8 hex characters) names it in lists and logs, and only
the SHA-256 of the whole key is stored. The secret holds 256 random bits, so a plain hash is enough (a
slow password hash protects low-entropy secrets; these have none to protect). The key itself is shown
once, when it is created.

Knows nothing about HTTP.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import redis

from core.redis_values import PREFIX, text

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""Tenant names: lowercase, digits, ``_.-``; at most 63 characters (they appear in Redis keys and logs)."""

LOCAL_TENANT = "local"
"""The tenant of every request in the keyless embedded mode."""

_KEY_RE = re.compile(r"vmk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant: str
    name: str
    created_at: float


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, find, list and revoke keys. ``<prefix>:apikey:<sha256>`` holds a key's record, and
    ``<prefix>:apikeys`` maps each key_id to its hash (for list and revoke)."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix

    def _rec(self, digest: str) -> str:
        return f"{self.prefix}:apikey:{digest}"

    def _index(self) -> str:
        return f"{self.prefix}:apikeys"

    def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key for ``tenant``: (its record, the key itself; shown once, never stored)."""
        if tenant == LOCAL_TENANT:
            raise ValueError(f"tenant {LOCAL_TENANT!r} is reserved for the keyless embedded mode")
        if not TENANT_RE.fullmatch(tenant):
            raise ValueError(
                f"tenant {tenant!r}: use 1-63 of a-z 0-9 _ . - (starting with a letter or digit)"
            )
        while True:
            key_id = secrets.token_hex(4)
            if self.r.hsetnx(self._index(), key_id, ""):
                break
        key = f"vmk_{key_id}_{secrets.token_urlsafe(32)}"
        rec = ApiKey(key_id=key_id, tenant=tenant, name=name[:200], created_at=time.time())
        digest = _digest(key)
        with self.r.pipeline() as p:
            p.hset(self._rec(digest), mapping={"key_id": key_id, "tenant": tenant, "name": rec.name,
                                               "created_at": rec.created_at})  # fmt: skip
            p.hset(self._index(), key_id, digest)
            p.execute()
        return rec, key

    def lookup(self, key: str) -> ApiKey | None:
        """The key's record, or None for a malformed, unknown or revoked key."""
        if not _KEY_RE.fullmatch(key):
            return None
        h = {text(k): text(v) for k, v in self.r.hgetall(self._rec(_digest(key))).items()}
        if "tenant" not in h:
            return None
        return ApiKey(
            key_id=h["key_id"], tenant=h["tenant"], name=h["name"], created_at=float(h["created_at"])
        )

    def list(self) -> list[ApiKey]:
        out = []
        for digest in self.r.hvals(self._index()):
            h = {text(k): text(v) for k, v in self.r.hgetall(self._rec(text(digest))).items()}
            if "tenant" in h:
                out.append(ApiKey(h["key_id"], h["tenant"], h["name"], float(h["created_at"])))
        return sorted(out, key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by its id; False if there is none. Requests with it fail from now on."""
        digest = self.r.hget(self._index(), key_id)
        if not digest:
            return False
        with self.r.pipeline() as p:
            p.delete(self._rec(text(digest)))
            p.hdel(self._index(), key_id)
            p.execute()
        return True
