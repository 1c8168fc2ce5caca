"""Per-tenant limits: how many streams and jobs run at once, and how often a tenant may ask.

Each refusal is a ``QuotaExceeded`` with ``retry_after_s``: the API answers 429 with a ``Retry-After``.

**Streams and jobs: reserve, then create.** A check that counts the running streams and a create that
follows it later (after an upload is read and probed, after an offer is answered) let every parallel
request pass the same count. So a request first *reserves* a place, in one Lua script that counts and
adds; the place later becomes the stream, or is given back.

Each tenant has one sorted set per quota group ("jobs": uploads and URLs; "live": cameras and browsers),
``Records.running_key``. Its members are

* the tenant's running streams (state in ``records.LIVE_STATES``), scored +inf. The one place that
  writes a stream's state, ``Records.set_stream_state``, adds or removes the stream in the same Lua step;
  ``create_stream`` adds it and ``delete_stream`` removes it. Nothing else counts states.
* reservations, ``r:<id>``, scored by when they expire. ``reserve`` drops the expired ones before it
  counts, so a place held by an API process that died (SIGKILL, lost machine) comes back after
  ``tenant_reservation_ttl_s``; the process holding it renews it while the request runs (a long upload).
  ``Records.create_stream(rec, reservation)`` swaps it for the stream in one transaction; ``release``
  gives it back (a refused or abandoned request). Releasing a place already swapped does nothing.

A browser's stream whose API process stopped beating still has a running state in its record (nobody
else can end it), but it no longer counts, as before: when a reservation finds the tenant at its limit,
the browsers' streams whose public state (``stream_state.public_state``, the one staleness rule) is no
longer a running one are left out of the count and it is tried once more. Counting them only at the
limit keeps the common case one script call.

**Asks** are counted per tenant and minute under ``<PREFIX>:rate:ask:<tenant>:<minute>``, keys this
module owns (``_ask_key``).

The command line (``vidmem ask``) and the benchmarks create streams without a reservation: they run for
the machine's own user, unlimited, and their streams still count against later reservations.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from core.errors import VidmemError
from core.redis_values import PREFIX, text
from workers.records import LIVE_STATES, UnknownStreamRecord, quota_group
from workers.runtime import Runtime
from workers.stream_state import public_state

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

# Reserve a place in a tenant's running set (KEYS[1]) unless it is full. ARGV: now, the reservation's
# expiry, the limit, its member, then members not to count (streams whose reader is gone). Returns -1
# when reserved, else how many places are taken.
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local taken = redis.call('ZCARD', KEYS[1])
for i = 5, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then taken = taken - 1 end
end
if taken >= tonumber(ARGV[3]) then return taken end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
return -1
"""


class QuotaExceeded(VidmemError):
    """A tenant is over one of its limits (``code``: quota_exceeded, rate_limited)."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A place among a tenant's running streams of one quota group: renewed while its request runs, then
    turned into the stream (``Records.create_stream(rec, reservation.member)``) or released."""

    key: str  # the tenant's running set (Records.running_key)
    member: str  # "r:<id>"


def reserve(rt: Runtime, tenant: str, kind: str) -> Reservation:
    """Take a place for a new stream of ``kind`` (upload, url, live, webrtc), or raise QuotaExceeded."""
    s = rt.settings
    group = quota_group(kind)
    limit = s.tenant_max_live_streams if group == "live" else s.tenant_max_jobs
    held = Reservation(rt.records.running_key(tenant, group), f"r:{uuid.uuid4().hex}")
    taken = _try(rt, held, limit, ())
    if taken >= limit and group == "live":
        taken = _try(rt, held, limit, _readers_gone(rt, held.key))
    if taken >= 0:
        what = "live streams" if group == "live" else "videos in progress"
        setting = "tenant_max_live_streams" if group == "live" else "tenant_max_jobs"
        raise QuotaExceeded(
            "quota_exceeded",
            f"tenant {tenant!r} already has {taken} {what} (limit {limit}, {setting}); stop one or wait "
            "for one to finish",
            retry_after_s=30,
        )
    return held


def renew(rt: Runtime, held: Reservation) -> None:
    """Push the reservation's expiry ``tenant_reservation_ttl_s`` on (nothing if it is gone)."""
    rt.redis.zadd(held.key, {held.member: time.time() + rt.settings.tenant_reservation_ttl_s}, xx=True)


def release(rt: Runtime, held: Reservation) -> None:
    """Give the place back (nothing if it already became a stream, or expired)."""
    rt.redis.zrem(held.key, held.member)


def _try(rt: Runtime, held: Reservation, limit: int, uncounted: tuple[str, ...]) -> int:
    now = time.time()
    expires = now + rt.settings.tenant_reservation_ttl_s
    args = [repr(now), repr(expires), str(limit), held.member, *uncounted]
    return int(rt.redis.eval(_RESERVE, 1, held.key, *args))


def _readers_gone(rt: Runtime, key: str) -> tuple[str, ...]:
    """The WebRTC streams of a running set that are over by their public state (their API process
    stopped beating), although their record still says running."""
    now, lease_s = time.time(), rt.settings.live_lease_s
    gone = []
    for sid in (text(x) for x in rt.redis.zrangebyscore(key, "+inf", "+inf")):
        try:
            rec = rt.records.stream(sid)
        except UnknownStreamRecord:  # deleted since: its place went with it
            continue
        if rec.kind != "webrtc":  # only a browser's reader lives in an API process
            continue
        if public_state(rec, rt.live.status(sid), now, lease_s).state not in LIVE_STATES:
            gone.append(sid)
    return tuple(gone)


def _ask_key(tenant: str, window: int) -> str:
    """The count of a tenant's asks in the one-minute window ``window`` (minutes since the epoch)."""
    return f"{PREFIX}:rate:ask:{tenant}:{window}"


def check_ask_rate(rt: Runtime, tenant: str) -> None:
    """Count one ask against the tenant's ``ask_per_minute``, or refuse it."""
    limit = rt.settings.ask_per_minute
    now = time.time()
    window = int(now // 60)
    elapsed = now / 60 - window
    keys = [_ask_key(tenant, window), _ask_key(tenant, window - 1)]
    ok = rt.redis.eval(_ASK, 2, *keys, f"{1 - elapsed:.6f}", limit)
    if not ok:
        raise QuotaExceeded(
            "rate_limited",
            f"tenant {tenant!r} asked more than {limit} questions in the last minute",
            retry_after_s=max(1, math.ceil((1 - elapsed) * 60)),
        )
