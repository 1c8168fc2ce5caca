"""Job and stream records in Redis: small hashes, read and written by the API and the workers.

Knows nothing about HTTP or models.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis

from core.errors import VidmemError
from core.redis_values import PREFIX, text

JobState = Literal["queued", "running", "done", "failed"]
StreamState = Literal["connecting", "live", "reconnecting", "stopped", "done"]

STREAM_STATE_OF_JOB: dict[JobState, StreamState] = {
    "queued": "connecting",
    "running": "live",
    "done": "done",
    "failed": "stopped",
}
"""The state of an upload's or URL's stream while its job is in each state (README, "Stream states"); a
stream stopped by DELETE stays "stopped" whatever its job does next."""

# Raise a stored float to a new value, never lower it (progress must not go back).
_RAISE_TO = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[2])
if new > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return ARGV[2] end
return tostring(cur)
"""

# Update a stream's state only if the stream still exists; "stopped" is final (a reader or an ingest
# finishing late never brings a stopped stream back). The tenant's set of running streams (KEYS[2], see
# ``Records.running_key``) follows the state in the same step: ARGV[2] is 1 for a running state.
_SET_STATE = """
if redis.call('HEXISTS', KEYS[1], 'stream_id') == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'stopped' and ARGV[1] ~= 'stopped' then return 1 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[2], 'NX', 'inf', ARGV[3])
else
  redis.call('ZREM', KEYS[2], ARGV[3])
end
if ARGV[4] then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
return 1
"""

# Create a stream (KEYS: its hash, the registry, the tenant's registry, the tenant's running set). ARGV:
# stream id, created_at, the quota place it takes ('' for none), now, 1 if its state is a running one,
# then the hash's fields and values. A place that is gone (given back because its request was cancelled,
# or expired) creates nothing and returns 0: the stream would run beyond the tenant's limit.
_CREATE = """
if ARGV[3] ~= '' then
  local until_ = redis.call('ZSCORE', KEYS[4], ARGV[3])
  if not until_ or tonumber(until_) < tonumber(ARGV[4]) then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[4], 'inf', ARGV[1]) end
return 1
"""


class UnknownJob(VidmemError, KeyError):
    code = "unknown_job"

    def __str__(self) -> str:
        return f"unknown job {self.args[0]!r}"


class UnknownStreamRecord(VidmemError, KeyError):
    code = "unknown_stream"

    def __str__(self) -> str:
        return f"unknown stream {self.args[0]!r}"


def new_id() -> str:
    return uuid.uuid4().hex


LIVE_STATES = ("connecting", "live", "reconnecting")
"""States of a stream that is still running (a reader, or a job, is on it)."""

LIVE_KINDS = ("live", "webrtc")
"""Stream kinds read as they happen (a camera URL, a browser's WebRTC track): times are wall-clock based,
and ``live_records`` holds their counters and gaps. The others ("upload", "url") are files."""


def quota_group(kind: str) -> str:
    """The limit a stream of ``kind`` counts against: "live" (cameras, browsers) or "jobs" (files)."""
    return "live" if kind in LIVE_KINDS else "jobs"


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """What the service knows about a stream, besides its memory."""

    stream_id: str
    kind: str  # "upload" | "url" | "live" | "webrtc"
    name: str
    source: str  # redacted: never holds credentials
    state: StreamState
    fps: float
    budget: int
    sample_mode: str
    created_at: float
    error: str | None = None
    tenant: str = "local"  # who owns it: only this tenant's API keys see it
    job_id: str | None = None  # the job reading an upload's or URL's video


@dataclass(frozen=True, slots=True)
class JobRecord:
    """An asynchronous video job. frames_encoded is derived from the memory, not counted."""

    job_id: str
    stream_id: str
    state: JobState
    source_path: str  # what the ingest worker opens (a server-side path, or a checked URL)
    frames_sampled: int
    sampling_done: bool
    expected_frames: int | None
    progress: float
    created_at: float
    error: str | None = None
    tenant: str = "local"


LIVE_FIELDS = frozenset({
    "url",  # a camera's URL, credentials included (never shown); absent for a WebRTC track
    "frames_sampled", "last_pts", "last_frame_wall", "last_read_wall",  # the hand-over's position
    "frames_dropped", "frames_skipped", "frames_replayed", "reconnects", "gaps_total",  # summed counters
    "owner", "heartbeat_at", "disconnected_since", "last_error", "resolution",  # the last reader's report
})  # fmt: skip
"""The fields a live stream's hash holds beside its ``StreamRecord`` (``workers.live_records`` writes and
reads them, through ``Records``: the one owner of the stream hash)."""


def _live_names(names: Iterable[str]) -> None:
    """Refuse a field that is not declared in LIVE_FIELDS (a typo would write a field nobody reads)."""
    if unknown := sorted(set(names) - LIVE_FIELDS):
        raise ValueError(f"not a live field of a stream hash: {', '.join(unknown)}")


class Records:
    """Typed access to job and stream hashes: the one owner of the keys ``<prefix>:job:*``,
    ``<prefix>:stream:*`` (the record, and the live fields of LIVE_FIELDS), ``<prefix>:streams`` and the
    tenants' stream sets."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._raise_to = client.register_script(_RAISE_TO)
        self._set_state = client.register_script(_SET_STATE)
        self._create = client.register_script(_CREATE)

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _stream(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{stream_id}"

    def _streams(self) -> str:
        return f"{self.prefix}:streams"

    def _tenant_streams(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:streams"

    def stream_key(self, stream_id: str) -> str:
        """The Redis hash of a stream's record, for a script that must name it among its KEYS (the
        live hand-over, ``LiveRecords.dispatch``)."""
        return self._stream(stream_id)

    def running_key(self, tenant: str, group: str) -> str:
        """The sorted set of a tenant's running streams of a quota ``group`` (``quota_group``), scored
        +inf, beside the quota reservations not yet turned into streams (``workers.quotas``), scored by
        their expiry. A stream is in it exactly while its state is one of LIVE_STATES: ``create_stream``
        adds it, ``set_stream_state`` and ``delete_stream`` keep it so."""
        return f"{self.prefix}:tenant:{tenant}:running:{group}"

    # ---- streams ----

    def create_stream(
        self, rec: StreamRecord, reservation: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> bool:
        """Store a new stream, with the live fields ``extra`` (LIVE_FIELDS) in the same step. A running one
        takes its place among the tenant's running streams, in the same step that drops ``reservation``
        (the quota place taken for it, if any). False, and nothing stored, when that place is gone (given
        back or expired before the stream could take it)."""
        _live_names(extra or {})
        values = {k: v for k, v in asdict(rec).items() if v is not None} | dict(extra or {})
        fields: list[Any] = [x for k, v in values.items() for x in (k, v)]
        keys = [self._stream(rec.stream_id), self._streams(), self._tenant_streams(rec.tenant),
                self.running_key(rec.tenant, quota_group(rec.kind))]  # fmt: skip
        args: list[Any] = [
            rec.stream_id,
            rec.created_at,
            reservation or "",
            time.time(),
            int(rec.state in LIVE_STATES),
        ]
        return bool(self._create(keys=keys, args=[*args, *fields]))

    def _stream_hash(self, stream_id: str) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.r.hgetall(self._stream(stream_id)).items()}

    def stream(self, stream_id: str) -> StreamRecord:
        h = self._stream_hash(stream_id)
        if "stream_id" not in h:
            raise UnknownStreamRecord(stream_id)
        return StreamRecord(
            stream_id=h["stream_id"],
            kind=h["kind"],
            name=h["name"],
            source=h["source"],
            state=h["state"],  # type: ignore[arg-type]
            fps=float(h["fps"]),
            budget=int(h["budget"]),
            sample_mode=h["sample_mode"],
            created_at=float(h["created_at"]),
            error=h.get("error") or None,
            tenant=h.get("tenant", "local"),
            job_id=h.get("job_id") or None,
        )

    def live_fields(self, stream_id: str) -> dict[str, str]:
        """The live fields (LIVE_FIELDS) a stream's hash holds: empty for an unknown stream."""
        return {k: v for k, v in self._stream_hash(stream_id).items() if k in LIVE_FIELDS}

    def live_field(self, stream_id: str, name: str) -> str | None:
        """One live field of a stream's hash, None when absent."""
        _live_names([name])
        raw = self.r.hget(self._stream(stream_id), name)
        return None if raw is None else text(raw)

    def write_live(
        self,
        pipe: redis.client.Pipeline,
        stream_id: str,
        *,
        values: Mapping[str, Any] | None = None,
        increments: Mapping[str, int] | None = None,
        unset: Iterable[str] = (),
    ) -> None:
        """Queue writes of live fields (LIVE_FIELDS) on ``pipe``, so that a caller writes them in one
        transaction with its own keys (a gap and ``gaps_total``): set ``values``, add ``increments``
        (zeros are skipped), delete ``unset``."""
        values, increments, unset = dict(values or {}), dict(increments or {}), list(unset)
        _live_names([*values, *increments, *unset])
        key = self._stream(stream_id)
        for k, n in increments.items():
            if n:
                pipe.hincrby(key, k, n)
        if values:
            mapping: dict[Any, Any] = values
            pipe.hset(key, mapping=mapping)
        if unset:
            pipe.hdel(key, *unset)

    def stream_exists(self, stream_id: str) -> bool:
        return bool(self.r.hexists(self._stream(stream_id), "stream_id"))

    def kinds_and_tenants(self, stream_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Each listed stream's (kind, tenant), in one pipelined round trip; a stream that does not exist
        (deleted while it was listed) is left out."""
        with self.r.pipeline(transaction=False) as p:
            for sid in stream_ids:
                p.hmget(self._stream(sid), ["kind", "tenant"])
            rows = p.execute()
        return {
            sid: (text(kind), text(tenant) if tenant is not None else "local")
            for sid, (kind, tenant) in zip(stream_ids, rows, strict=True)
            if kind is not None
        }

    def stream_ids(self) -> list[str]:
        """Every tenant's streams, oldest first."""
        return [text(x) for x in self.r.zrange(self._streams(), 0, -1)]

    def tenant_stream_ids(self, tenant: str) -> list[str]:
        """One tenant's streams, oldest first."""
        return [text(x) for x in self.r.zrange(self._tenant_streams(tenant), 0, -1)]

    def owned_stream(self, stream_id: str, tenant: str) -> StreamRecord:
        """The stream, if ``tenant`` owns it. Another tenant's stream is unknown (never "forbidden": that
        would tell who has which ids)."""
        rec = self.stream(stream_id)
        if rec.tenant != tenant:
            raise UnknownStreamRecord(stream_id)
        return rec

    def set_stream_state(self, stream_id: str, state: StreamState, error: str | None = None) -> bool:
        """Set the state of an existing stream (a deleted one stays deleted). False if none."""
        tenant, kind = self.r.hmget(self._stream(stream_id), "tenant", "kind")
        if kind is None:
            return False
        running = self.running_key(text(tenant) if tenant else "local", quota_group(text(kind)))
        args = [state, int(state in LIVE_STATES), stream_id, *([] if error is None else [error])]
        return bool(self._set_state(keys=[self._stream(stream_id), running], args=args))

    def set_stream_error(self, stream_id: str, error: str) -> None:
        """Note an error on a stream that keeps running (a live stream's failed chunk)."""
        if self.stream_exists(stream_id):
            self.r.hset(self._stream(stream_id), "error", error)

    def delete_stream(self, stream_id: str) -> None:
        raw_tenant, kind = self.r.hmget(self._stream(stream_id), "tenant", "kind")
        tenant = text(raw_tenant) if raw_tenant else "local"
        with self.r.pipeline() as p:
            p.delete(self._stream(stream_id))
            p.zrem(self._streams(), stream_id)
            p.zrem(self._tenant_streams(tenant), stream_id)
            if kind is not None:
                p.zrem(self.running_key(tenant, quota_group(text(kind))), stream_id)
            p.execute()

    # ---- jobs ----

    def create_job(
        self,
        job_id: str,
        stream_id: str,
        source_path: str,
        expected_frames: int | None,
        tenant: str = "local",
    ) -> None:
        self.r.hset(
            self._job(job_id),
            mapping={
                "job_id": job_id,
                "tenant": tenant,
                "stream_id": stream_id,
                "state": "queued",
                "source_path": source_path,
                "frames_sampled": 0,
                "sampling_done": 0,
                "expected_frames": -1 if expected_frames is None else expected_frames,
                "progress": 0.0,
                "created_at": time.time(),
            },
        )

    def job(self, job_id: str) -> JobRecord:
        h = {text(k): text(v) for k, v in self.r.hgetall(self._job(job_id)).items()}
        if not h:
            raise UnknownJob(job_id)
        expected = int(h["expected_frames"])
        return JobRecord(
            job_id=h["job_id"],
            stream_id=h["stream_id"],
            state=h["state"],  # type: ignore[arg-type]
            source_path=h["source_path"],
            frames_sampled=int(h["frames_sampled"]),
            sampling_done=h["sampling_done"] == "1",
            expected_frames=None if expected < 0 else expected,
            progress=float(h["progress"]),
            created_at=float(h["created_at"]),
            error=h.get("error") or None,
            tenant=h.get("tenant", "local"),
        )

    def owned_job(self, job_id: str, tenant: str) -> JobRecord:
        """The job, if ``tenant`` owns it; another tenant's job is unknown."""
        job = self.job(job_id)
        if job.tenant != tenant:
            raise UnknownJob(job_id)
        return job

    def update_job(self, job_id: str, **fields: Any) -> None:
        mapping: dict[Any, Any] = fields
        self.r.hset(self._job(job_id), mapping=mapping)

    def set_job_state(self, job_id: str, stream_id: str, state: JobState, error: str | None = None) -> None:
        """Move a job to ``state`` and its stream to the state that follows from it (STREAM_STATE_OF_JOB)."""
        self.update_job(job_id, state=state, **({} if error is None else {"error": error}))
        self.set_stream_state(stream_id, STREAM_STATE_OF_JOB[state], error=error)

    def raise_progress(self, job_id: str, value: float) -> float:
        return float(text(self._raise_to(keys=[self._job(job_id)], args=["progress", f"{value:.6f}"])))

    def delete_job(self, job_id: str) -> None:
        self.r.delete(self._job(job_id))

    def expire_job(self, job_id: str, ttl_s: int) -> None:
        self.r.expire(self._job(job_id), ttl_s)
