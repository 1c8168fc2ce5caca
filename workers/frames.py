"""Frames in flight between the ingest and encode stages, as short-TTL Redis keys.

Tasks carry the key, never the pixels.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import cast

import numpy as np
import redis

from core.redis_values import PREFIX, text
from stream.frames import Frame

_LEN = struct.Struct("<I")


def pack_frames(frames: Sequence[Frame]) -> bytes:
    """[header length][JSON header][RGB bytes of every frame, concatenated]."""
    head = json.dumps([[f.seq, f.pts, f.wall_time, f.keyframe, *f.image.shape] for f in frames]).encode()
    return _LEN.pack(len(head)) + head + b"".join(np.ascontiguousarray(f.image).tobytes() for f in frames)


def unpack_frames(raw: bytes) -> list[Frame]:
    (n,) = _LEN.unpack_from(raw)
    pos = _LEN.size + n
    out = []
    for seq, pts, wall, key, h, w, c in json.loads(raw[_LEN.size : pos]):
        size = h * w * c
        image = np.frombuffer(raw[pos : pos + size], dtype=np.uint8).reshape(h, w, c)
        out.append(Frame(seq=seq, pts=pts, image=image, keyframe=key, wall_time=wall))
        pos += size
    return out


class FrameStore:
    """Chunks of frames under ``vm:{sid}:frames:<lo>-<hi>`` (prefix ``core.redis_values.PREFIX``), each
    also listed (scored by ``lo``) in the stream's in-flight set until an encoder has appended it, so that
    a new owner can re-send them."""

    def __init__(self, client: redis.Redis, ttl_s: int, prefix: str = PREFIX) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, stream_id: str, lo: int, hi: int) -> str:
        return f"{self.prefix}:{{{stream_id}}}:frames:{lo}-{hi}"

    def inflight_key(self, stream_id: str) -> str:
        return f"{self.prefix}:{{{stream_id}}}:inflight"

    def put(self, stream_id: str, frames: Sequence[Frame]) -> str:
        key = self.key(stream_id, frames[0].seq, frames[-1].seq)
        with self.r.pipeline() as p:
            p.set(key, pack_frames(frames), ex=self.ttl_s)
            p.zadd(self.inflight_key(stream_id), {key: frames[0].seq})
            p.execute()
        return key

    @staticmethod
    def seqs(key: str) -> range:
        """The frame sequence numbers a key returned by ``put`` holds."""
        lo, hi = key.rsplit(":", 1)[1].split("-")
        return range(int(lo), int(hi) + 1)

    @staticmethod
    def stream_of(key: str) -> str:
        return key[key.index("{") + 1 : key.index("}")]

    def get(self, key: str) -> list[Frame] | None:
        raw = cast(bytes | None, self.r.get(key))
        return None if raw is None else unpack_frames(raw)

    def inflight(self, stream_id: str) -> list[str]:
        """Keys of chunks not yet appended (oldest first); some may have expired."""
        return [text(k) for k in self.r.zrange(self.inflight_key(stream_id), 0, -1)]

    def waiting(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Per stream, the frames handed over and not yet appended (in its in-flight chunks, some of which
        may have expired). One pipelined round trip, whatever the number of streams."""
        with self.r.pipeline(transaction=False) as p:
            for sid in stream_ids:
                p.zrange(self.inflight_key(sid), 0, -1)
            got = p.execute()
        return {
            sid: sum(len(self.seqs(text(k))) for k in keys) for sid, keys in zip(stream_ids, got, strict=True)
        }

    def delete(self, key: str) -> None:
        with self.r.pipeline() as p:
            p.delete(key)
            p.zrem(self.inflight_key(self.stream_of(key)), key)
            p.execute()

    def delete_stream(self, stream_id: str) -> None:
        """Drop every chunk of a purged stream."""
        keys = self.inflight(stream_id)
        self.r.delete(self.inflight_key(stream_id), *keys)
