"""What Redis holds about live streams, besides the stream record: the URL, counters, gaps, and the
fenced hand-over of sampled frames to the encoders.

Keys (prefix ``core.redis_values.PREFIX``, "vm"):
  vm:live                  set of live streams still to be read (a stopped stream leaves it)
  vm:{<sid>}:gaps          list of JSON ``[start_wall, end_wall, reason]``, oldest first, the newest kept
  vm:{<sid>}:lease         the ingest process reading the stream (a ``lease.Lease`` token)

The live fields (the URL, the hand-over's position, the counters, the last report) live in the stream's
hash, which ``records.Records`` owns: they are declared in ``records.LIVE_FIELDS`` and read and written
through it (the hand-over script gets the hash's key from ``Records.stream_key``).

Exactly-once reading: frames reach the encoders only through ``dispatch``, one Lua script that checks the
caller still holds the stream's lease *and* that the chunk starts at the stream's ``frames_sampled``,
then stores the chunk and advances ``frames_sampled``. A reader that lost its lease (paused, cut off)
cannot hand over a frame, and a new reader continues the sequence where the old one's last chunk ended.

Knows nothing about PyAV, models or HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from core.redis_values import PREFIX, text
from stream.frames import Frame
from stream.live_types import Gap
from workers.frames import FrameStore, pack_frames
from workers.records import Records, StreamRecord

_DISPATCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[4], 'stream_id') == 0 then return 0 end
if redis.call('HGET', KEYS[4], 'state') == 'stopped' then return 0 end
if tonumber(redis.call('HGET', KEYS[4], 'frames_sampled') or '0') ~= tonumber(ARGV[4]) then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], KEYS[2])
redis.call('HSET', KEYS[4], 'frames_sampled', ARGV[5], 'last_pts', ARGV[6], 'last_frame_wall', ARGV[7],
           'last_read_wall', ARGV[8])
return 1
"""

_COUNTERS = ("frames_dropped", "frames_skipped", "frames_replayed", "reconnects")


class NotOwner(RuntimeError):
    """The caller no longer holds the stream's lease (or the stream is gone): stop reading it."""


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """The live fields of a stream record (counters summed over every reader the stream had)."""

    frames_sampled: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    frames_replayed: int = 0
    reconnects: int = 0
    gaps_total: int = 0
    last_pts: float | None = None
    last_frame_wall: float | None = None
    last_read_wall: float | None = None
    """When the last frame handed over was decoded (``last_frame_wall``: when it was shown)."""
    disconnected_since: float | None = None
    last_error: str | None = None
    owner: str | None = None
    heartbeat_at: float | None = None
    resolution: str | None = None
    """"WxH" of the last frame as the source sent it (before resizing for the encoder)."""


def _f(h: dict[str, str], k: str) -> float | None:
    return float(h[k]) if h.get(k) else None


class LiveRecords:
    def __init__(
        self, client: redis.Redis, records: Records, frames: FrameStore, prefix: str = PREFIX
    ) -> None:
        self.r = client
        self.records = records
        self.frames = frames
        self.prefix = prefix
        self._dispatch = client.register_script(_DISPATCH)

    def _gaps(self, sid: str) -> str:
        return f"{self.prefix}:{{{sid}}}:gaps"

    def _active(self) -> str:
        return f"{self.prefix}:live"

    def lease_key(self, sid: str) -> str:
        return f"{self.prefix}:{{{sid}}}:lease"

    # ---- registry ----

    def create(self, rec: StreamRecord, url: str | None, reservation: str | None = None) -> bool:
        """Register a live stream: its record, its URL (credentials included: never shown), and a place in
        the set the ingest processes read. ``url`` None (a WebRTC track): the process that holds the
        connection reads it, so no ingest process is told about it. ``reservation``: the quota place the
        stream takes (``Records.create_stream``); False, and nothing registered, when that place is gone."""
        extra = {"frames_sampled": 0} | ({} if url is None else {"url": url})
        if not self.records.create_stream(rec, reservation, extra=extra):
            return False
        if url is not None:
            self.r.sadd(self._active(), rec.stream_id)
        return True

    def active(self) -> list[str]:
        return sorted(text(x) for x in self.r.smembers(self._active()))

    def retire(self, sid: str) -> None:
        """The stream is stopped or deleted: no reader picks it up again."""
        self.r.srem(self._active(), sid)

    def url(self, sid: str) -> str:
        url = self.records.live_field(sid, "url")
        if url is None:
            raise KeyError(sid)
        return url

    def delete(self, sid: str) -> None:
        self.retire(sid)
        self.r.delete(self._gaps(sid), self.lease_key(sid))
        self.frames.delete_stream(sid)

    # ---- reader side ----

    def dispatch(self, sid: str, token: str, frames: Sequence[Frame], read_wall: float | None = None) -> str:
        """Hand a chunk (seq contiguous, starting at ``frames_sampled``) to the encoders; returns its key.
        ``read_wall``: when its last frame was decoded (default: when it was shown, ``wall_time``; an HLS
        frame is shown, by its own clock, up to a few segments before or after it is decoded).

        Raises NotOwner if the lease is not ``token``'s any more, or the stream was stopped or deleted.
        """
        lo, hi = frames[0].seq, frames[-1].seq
        key = self.frames.key(sid, lo, hi)
        last = frames[-1]
        ok = self._dispatch(
            keys=[self.lease_key(sid), key, self.frames.inflight_key(sid), self.records.stream_key(sid)],
            args=[token, pack_frames(frames), self.frames.ttl_s, lo, hi + 1, repr(last.pts),
                  repr(last.wall_time or time.time()), repr(read_wall or last.wall_time or time.time())],
        )  # fmt: skip
        if ok == -1:
            raise NotOwner(f"stream {sid}: chunk {lo}-{hi} does not continue the stream's sequence")
        if not ok:
            raise NotOwner(f"stream {sid}: the lease is held by another reader, or the stream stopped")
        return key

    def report(
        self,
        sid: str,
        *,
        owner: str,
        increments: dict[str, int],
        disconnected_since: float | None,
        last_error: str | None,
        resolution: tuple[int, int] | None = None,
    ) -> None:
        """A reader's heartbeat: counter increments since its last report, and its connection state."""
        if unknown := sorted(set(increments) - set(_COUNTERS)):
            raise ValueError(f"unknown counter {unknown[0]!r}")
        values = {"owner": owner, "heartbeat_at": repr(time.time())}
        if disconnected_since is not None:
            values["disconnected_since"] = repr(disconnected_since)
        if last_error is not None:
            values["last_error"] = last_error
        if resolution is not None:
            values["resolution"] = f"{resolution[0]}x{resolution[1]}"
        unset = ["disconnected_since"] if disconnected_since is None else []
        with self.r.pipeline() as p:
            self.records.write_live(p, sid, values=values, increments=increments, unset=unset)
            p.execute()

    def add_gap(self, sid: str, gap: Gap, keep: int) -> None:
        with self.r.pipeline() as p:
            p.rpush(self._gaps(sid), json.dumps([gap.start_wall, gap.end_wall, gap.reason]))
            p.ltrim(self._gaps(sid), -keep, -1)
            self.records.write_live(p, sid, increments={"gaps_total": 1})
            p.execute()

    # ---- readers of the state ----

    def gaps(self, sid: str, last: int | None = None) -> list[Gap]:
        """The gaps kept, oldest first (only the newest ``last`` if given)."""
        raw = self.r.lrange(self._gaps(sid), -last if last else 0, -1)
        return [Gap(start_wall=a, end_wall=b, reason=c) for a, b, c in (json.loads(x) for x in raw)]

    def status(self, sid: str) -> LiveStatus:
        h = self.records.live_fields(sid)
        return LiveStatus(
            frames_sampled=int(h.get("frames_sampled", 0)),
            frames_dropped=int(h.get("frames_dropped", 0)),
            frames_skipped=int(h.get("frames_skipped", 0)),
            frames_replayed=int(h.get("frames_replayed", 0)),
            reconnects=int(h.get("reconnects", 0)),
            gaps_total=int(h.get("gaps_total", 0)),
            last_pts=_f(h, "last_pts"),
            last_frame_wall=_f(h, "last_frame_wall"),
            last_read_wall=_f(h, "last_read_wall"),
            disconnected_since=_f(h, "disconnected_since"),
            last_error=h.get("last_error") or None,
            owner=h.get("owner") or None,
            heartbeat_at=_f(h, "heartbeat_at"),
            resolution=h.get("resolution") or None,
        )
