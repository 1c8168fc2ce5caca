"""Per-tenant limits: how many streams and jobs run at once, and how often a tenant may ask.

Each refusal is a ``ServiceError`` with ``retry_after_s``: the API answers 429 with a ``Retry-After``.
"""

from __future__ import annotations

import math
import time

from workers.records import LIVE_KINDS, LIVE_STATES
from workers.runtime import Runtime

# A sliding window over two fixed one-minute windows: the previous window's count weighted by how much
# of it still overlaps the last 60 s, plus the current one's. One INCR per ask; no sorted sets.
_ASK = """
local cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('EXPIRE', KEYS[1], 130) end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = prev * tonumber(ARGV[1]) + cur
if used > tonumber(ARGV[2]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""


class QuotaExceeded(Exception):
    """A tenant is over one of its limits (``code``: quota_exceeded, rate_limited)."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


def active_streams(rt: Runtime, tenant: str) -> dict[str, int]:
    """{"live": n, "jobs": n}: the tenant's live streams (cameras, browsers) and uploads/URLs in progress.

    A browser's stream whose API process died (no heartbeat) no longer counts."""
    ids = rt.records.tenant_stream_ids(tenant)
    with rt.redis.pipeline(transaction=False) as p:
        for sid in ids:
            p.hmget(rt.records.stream_key(sid), "kind", "state", "created_at")
        rows = p.execute()
    counts = {"live": 0, "jobs": 0}
    now = time.time()
    for sid, (kind, state, created) in zip(ids, rows, strict=True):
        if state is None or state.decode() not in LIVE_STATES:
            continue
        k = kind.decode()
        if k == "webrtc" and rt.live.status(sid).reader_gone(float(created), rt.settings.live_lease_s, now):
            continue  # its API process is gone, as the stream's view says
        counts["live" if k in LIVE_KINDS else "jobs"] += 1
    return counts


def check_stream_quota(rt: Runtime, tenant: str, kind: str) -> None:
    """Refuse a new stream of ``kind`` when the tenant already runs its limit of that kind."""
    s = rt.settings
    group, limit = ("live", s.tenant_max_live_streams) if kind in LIVE_KINDS else ("jobs", s.tenant_max_jobs)
    n = active_streams(rt, tenant)[group]
    if n >= limit:
        what = "live streams" if group == "live" else "videos in progress"
        raise QuotaExceeded(
            "quota_exceeded",
            f"tenant {tenant!r} already has {n} {what} (limit {limit}); stop one or wait for one to finish",
            retry_after_s=30,
        )


def check_ask_rate(rt: Runtime, tenant: str) -> None:
    """Count one ask against the tenant's ``ask_per_minute``, or refuse it."""
    limit = rt.settings.ask_per_minute
    now = time.time()
    window = int(now // 60)
    elapsed = now / 60 - window
    keys = [f"vm:rate:ask:{tenant}:{window}", f"vm:rate:ask:{tenant}:{window - 1}"]
    ok = rt.redis.eval(_ASK, 2, *keys, f"{1 - elapsed:.6f}", limit)
    if not ok:
        raise QuotaExceeded(
            "rate_limited",
            f"tenant {tenant!r} asked more than {limit} questions in the last minute",
            retry_after_s=max(1, math.ceil((1 - elapsed) * 60)),
        )
