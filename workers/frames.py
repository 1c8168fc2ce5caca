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
    def __init__(self, client: redis.Redis, ttl_s: int, prefix: str = "vm") -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def put(self, stream_id: str, frames: Sequence[Frame]) -> str:
        key = f"{self.prefix}:{{{stream_id}}}:frames:{frames[0].seq}-{frames[-1].seq}"
        self.r.set(key, pack_frames(frames), ex=self.ttl_s)
        return key

    @staticmethod
    def seqs(key: str) -> range:
        """The frame sequence numbers a key returned by ``put`` holds."""
        lo, hi = key.rsplit(":", 1)[1].split("-")
        return range(int(lo), int(hi) + 1)

    def get(self, key: str) -> list[Frame] | None:
        raw = cast(bytes | None, self.r.get(key))
        return None if raw is None else unpack_frames(raw)

    def delete(self, key: str) -> None:
        self.r.delete(key)
