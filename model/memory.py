"""The bounded visual memory of one stream, stored in Redis: ``TokenMemory``.

The layout (which slots, at which sides, which pair merges) is planned by ``model.layout``
without I/O; this module reads what the plan starts from and writes what it changed.

Appends are idempotent and ordered by frame sequence number: the memory holds exactly
the frames ``0 .. next_seq - 1``. A frame that arrives ahead of its predecessors waits
in a small ``pending`` hash until the gap closes; a frame below ``next_seq`` is a retry
and is ignored. Every write runs as one optimistic transaction (``Redis.transaction``: WATCH
on the meta key, MULTI/EXEC), so concurrent writers never break the layout's invariant.

Redis keys (``{sid}`` in a hash tag so a stream's keys share a cluster slot)::

    {p}:{sid}:meta        hash   config + counters (side, n_slots, next_seq, version, ...)
    {p}:{sid}:slots       hash   slot id -> JSON span metadata
    {p}:{sid}:pairs       hash   left slot id -> merge score of (left, its right neighbour)
    {p}:{sid}:tok:{id}    string raw tokens [side, side, D] in the storage dtype
    {p}:{sid}:thumb:{id}  string JPEG thumbnail
    {p}:{sid}:pending     hash   seq -> packed EncodedFrame waiting for its predecessors

numpy + redis only: the API process reads the memory without importing torch.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import numpy as np
import redis

from core.errors import VidmemError
from core.redis_values import PREFIX, text
from model.compressor import layout_cost
from model.layout import Changes, Intake, Layout, check_frame, intake
from model.slots import EncodedFrame, MemoryConfig, MemoryState, SlotInfo, StorageDtype, frames_in

__all__ = [
    "Footprint",
    "MemoryBusy",
    "MemoryConfig",
    "MemoryState",
    "SlotInfo",
    "TokenMemory",
    "UnknownStream",
    "frames_in",
]

T = TypeVar("T")

MAX_ATTEMPTS = 100
"""Optimistic tries of one transaction. Each failed try means another writer committed (the
memory as a whole moves on); only a writer outpaced this many times in a row gives up."""


class UnknownStream(VidmemError, KeyError):
    """No memory exists for this stream id."""

    code = "unknown_stream"
    status = 404

    def __str__(self) -> str:
        return f"unknown stream {self.args[0]!r}"


class MemoryBusy(VidmemError):
    """A transaction lost ``MAX_ATTEMPTS`` optimistic tries in a row to concurrent writers: the store
    cannot take this write now (the API's 503 ``store_unavailable``); trying again later helps."""

    code = "store_unavailable"
    status = 503
    retry_after_s = 1


class _Stale(redis.WatchError):
    """A read saw a key a concurrent writer had just replaced: retry the transaction."""


def _blob(raw: bytes | None) -> bytes:
    if raw is None:
        raise _Stale
    return raw


def _grid(raw: bytes | None, side: int, dim: int, dtype: str) -> np.ndarray:
    """Raw stored tokens -> [side, side, dim]; a size mismatch means a concurrent rewrite."""
    data = _blob(raw)
    if len(data) != side * side * dim * np.dtype(dtype).itemsize:
        raise _Stale
    return np.frombuffer(data, dtype=dtype).reshape(side, side, dim)


_HEADER = struct.Struct("<I")


def _pack_frame(f: EncodedFrame) -> bytes:
    head = json.dumps(
        [f.seq, f.t, f.wall_time, list(f.tokens.shape), str(f.tokens.dtype), len(f.thumb), f.text_tokens]
    ).encode()
    return _HEADER.pack(len(head)) + head + f.thumb + np.ascontiguousarray(f.tokens).tobytes()


def _unpack_frame(raw: bytes) -> EncodedFrame:
    (n,) = _HEADER.unpack_from(raw)
    seq, t, wall, shape, dtype, n_thumb, text_tokens = json.loads(raw[_HEADER.size : _HEADER.size + n])
    body = _HEADER.size + n
    thumb = raw[body : body + n_thumb]
    tokens = np.frombuffer(raw[body + n_thumb :], dtype=dtype).reshape(shape)
    return EncodedFrame(seq=seq, t=t, tokens=tokens, thumb=thumb, wall_time=wall, text_tokens=text_tokens)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """meta, slots, pairs and the pending seqs of one stream, read in one MULTI (consistent)."""

    meta: dict[str, str]
    slots: dict[Any, Any]
    pairs: dict[Any, Any]
    waiting: set[int]


class TokenMemory:
    """Per-stream bounded token memories in one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix

    def key(self, sid: str, part: str) -> str:
        return f"{self.prefix}:{{{sid}}}:{part}"

    def _transaction(self, sid: str, func: Callable[[Any], T]) -> T:
        """Run ``func(pipe)`` with the stream's meta key watched, then EXEC what it queued; retried
        (at most ``MAX_ATTEMPTS`` times) while a concurrent writer commits first or a read is stale.

        ``func`` reads in immediate mode, calls ``pipe.multi()`` before it queues writes (or queues
        nothing: the empty EXEC still fails if the meta key changed), and returns the result.
        """
        attempts = itertools.count(1)

        def once(pipe: Any) -> T:
            if next(attempts) > MAX_ATTEMPTS:
                raise MemoryBusy(f"memory {sid}: {MAX_ATTEMPTS} tries lost to concurrent writers")
            try:
                return func(pipe)
            except _Stale:
                pipe.reset()  # drop the watch the stale read already proves dirty
                raise

        # redis-py types func as returning None, though value_from_callable returns its value
        watched = self.key(sid, "meta")
        return cast(T, self.r.transaction(once, watched, value_from_callable=True))  # type: ignore[arg-type]

    # ---- lifecycle -------------------------------------------------------------------------

    def create(self, sid: str, cfg: MemoryConfig) -> MemoryConfig:
        """Create the memory if absent (idempotent); returns the config in force."""
        meta = self.key(sid, "meta")
        fields: dict[Any, Any] = asdict(cfg) | {
            "side": cfg.s_max,
            "n_slots": 0,
            "next_seq": 0,
            "next_slot_id": 0,
            "version": 0,
        }

        def once(pipe: Any) -> MemoryConfig:
            found = pipe.hgetall(meta)
            if found:
                return _config_from_meta(found)
            pipe.multi()
            pipe.hset(meta, mapping=fields)
            return cfg

        return self._transaction(sid, once)

    def exists(self, sid: str) -> bool:
        return bool(self.r.exists(self.key(sid, "meta")))

    def config(self, sid: str) -> MemoryConfig:
        meta = self.r.hgetall(self.key(sid, "meta"))
        if not meta:
            raise UnknownStream(sid)
        return _config_from_meta(meta)

    def delete(self, sid: str) -> None:
        keys = [self.key(sid, p) for p in ("meta", "slots", "pairs", "pending")]
        ids = [int(k) for k in self.r.hkeys(self.key(sid, "slots"))]
        keys += [self.key(sid, f"tok:{i}") for i in ids] + [self.key(sid, f"thumb:{i}") for i in ids]
        self.r.delete(*keys)

    # ---- writes ----------------------------------------------------------------------------

    def append(self, sid: str, frames: Sequence[EncodedFrame]) -> int:
        """Add encoded frames (any order, retries welcome). Returns the memory's next_seq after it."""
        return self._transaction(sid, lambda pipe: self._append_once(pipe, sid, frames))

    def _snapshot(self, sid: str) -> _Snapshot:
        """One consistent read (MULTI on its own connection) of everything an append plans from.

        Reads one by one could mix two writers' states and trip over it before EXEC notices.
        """
        with self.r.pipeline(transaction=True) as read:
            for part in ("meta", "slots", "pairs"):
                read.hgetall(self.key(sid, part))
            read.hkeys(self.key(sid, "pending"))
            meta, slots, pairs, pending = read.execute()
        return _Snapshot(_decode(meta), slots, pairs, {int(k) for k in pending})

    def _append_once(self, pipe: Any, sid: str, frames: Sequence[EncodedFrame]) -> int:
        snap = self._snapshot(sid)  # after WATCH: any later write makes our EXEC fail
        if not snap.meta:
            raise UnknownStream(sid)
        cfg = _config_from_meta(snap.meta)
        for f in frames:
            check_frame(cfg, f)
        pend_key = self.key(sid, "pending")
        plan = intake(
            frames,
            int(snap.meta["next_seq"]),
            snap.waiting,
            lambda seq: _unpack_frame(_blob(pipe.hget(pend_key, str(seq)))),
        )
        changes = self._layout(pipe, sid, cfg, snap).extend(plan.run) if plan.run else None
        pipe.multi()
        pipe.hincrby(self.key(sid, "meta"), "version", 1)
        if plan.stage:
            pipe.hset(pend_key, mapping={str(s): _pack_frame(f) for s, f in plan.stage.items()})
        if changes is not None:
            self._write(pipe, sid, changes, plan)
        return plan.next_seq

    def _layout(self, pipe: Any, sid: str, cfg: MemoryConfig, snap: _Snapshot) -> Layout:
        """The snapshot's layout, its tokens read on demand through the watched ``pipe``."""

        def load(info: SlotInfo) -> np.ndarray:
            return _grid(pipe.get(self.key(sid, f"tok:{info.slot_id}")), info.side, cfg.dim, cfg.dtype)

        return Layout(
            cfg,
            (SlotInfo.from_json(int(k), v) for k, v in snap.slots.items()),
            {int(k): float(v) for k, v in snap.pairs.items()},
            side=int(snap.meta["side"]),
            next_id=int(snap.meta["next_slot_id"]),
            load=load,
        )

    def _write(self, pipe: Any, sid: str, changes: Changes, plan: Intake) -> None:
        """Queue (after MULTI) the writes of an append's layout changes and the pending seqs it took."""
        pipe.hset(
            self.key(sid, "meta"),
            mapping={
                "side": changes.side,
                "n_slots": len(changes.slots),
                "next_seq": plan.next_seq,
                "next_slot_id": changes.next_id,
            },
        )
        if plan.consumed:
            pipe.hdel(self.key(sid, "pending"), *[str(s) for s in plan.consumed])
        infos = {s.slot_id: s for s in changes.slots}
        if changes.tokens:
            pipe.hset(self.key(sid, "slots"), mapping={i: infos[i].to_json() for i in changes.tokens})
        for i, toks in changes.tokens.items():
            pipe.set(self.key(sid, f"tok:{i}"), np.ascontiguousarray(toks).tobytes())
        for i, thumb in changes.thumbs.items():
            pipe.set(self.key(sid, f"thumb:{i}"), thumb)
        if changes.removed:
            pipe.hdel(self.key(sid, "slots"), *changes.removed)
            pipe.hdel(self.key(sid, "pairs"), *changes.removed)
            pipe.delete(*[self.key(sid, f"tok:{i}") for i in changes.removed])
            pipe.delete(*[self.key(sid, f"thumb:{i}") for i in changes.removed])
        if changes.scores:
            pipe.hset(self.key(sid, "pairs"), mapping=changes.scores)
        if changes.unscored:
            pipe.hdel(self.key(sid, "pairs"), *changes.unscored)

    # ---- reads -----------------------------------------------------------------------------

    def state(self, sid: str, with_tokens: bool = False) -> MemoryState:
        """A consistent snapshot (retried if a writer commits while it is read)."""
        return self._transaction(sid, lambda pipe: self._read_state(pipe, sid, with_tokens))

    def _read_state(self, pipe: Any, sid: str, with_tokens: bool) -> MemoryState:
        """The state read through the watched ``pipe``; its empty EXEC fails if a writer committed."""
        meta = _decode(pipe.hgetall(self.key(sid, "meta")))
        if not meta:
            raise UnknownStream(sid)
        cfg = _config_from_meta(meta)
        raw = pipe.hgetall(self.key(sid, "slots"))
        infos = sorted((SlotInfo.from_json(int(k), v) for k, v in raw.items()), key=lambda s: s.seq_lo)
        tokens: dict[int, np.ndarray] = {}
        if with_tokens and infos:
            blobs = cast(list[bytes | None], pipe.mget([self.key(sid, f"tok:{s.slot_id}") for s in infos]))
            for s, blob in zip(infos, blobs, strict=True):
                tokens[s.slot_id] = _grid(blob, s.side, cfg.dim, cfg.dtype)
        return MemoryState(
            stream_id=sid,
            config=cfg,
            version=int(meta["version"]),
            next_seq=int(meta["next_seq"]),
            side=int(meta["side"]),
            slots=tuple(infos),
            tokens=tokens,
        )

    def next_seq(self, sid: str) -> int:
        """How many frames (0 .. next_seq - 1) the memory holds; 0 if it does not exist yet.

        One HGET: cheap enough to poll, unlike ``state``.
        """
        raw = cast(bytes | None, self.r.hget(self.key(sid, "meta"), "next_seq"))
        return 0 if raw is None else int(raw)

    def thumbnail(self, sid: str, slot_id: int) -> bytes | None:
        return cast(bytes | None, self.r.get(self.key(sid, f"thumb:{slot_id}")))

    def pending_seqs(self, sid: str) -> list[int]:
        return sorted(int(k) for k in self.r.hkeys(self.key(sid, "pending")))

    def stored_bytes(self, sid: str) -> int:
        """Payload bytes held for the stream (tokens, thumbnails, metadata, pending frames)."""
        ids = [int(k) for k in self.r.hkeys(self.key(sid, "slots"))]
        with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.strlen(self.key(sid, f"tok:{i}"))
                pipe.strlen(self.key(sid, f"thumb:{i}"))
            for part in ("meta", "slots", "pairs", "pending"):
                pipe.hgetall(self.key(sid, part))
            out = pipe.execute()
        sizes = out[: 2 * len(ids)]
        hashes = out[2 * len(ids) :]
        return int(sum(sizes)) + sum(len(k) + len(v) for h in hashes for k, v in h.items())

    def footprints(self, stream_ids: Sequence[str]) -> dict[str, Footprint]:
        """What each stream's memory costs (a stream without one: nothing). Two pipelined round trips,
        whatever the number of streams: the meta and slot hashes, then the thumbnails' STRLEN."""
        with self.r.pipeline(transaction=False) as p:
            for sid in stream_ids:
                p.hgetall(self.key(sid, "meta"))
                p.hgetall(self.key(sid, "slots"))
            got = p.execute()
        metas = [_decode(meta) for meta in got[0::2]]
        slots = [[SlotInfo.from_json(int(k), v) for k, v in raw.items()] for raw in got[1::2]]
        with self.r.pipeline(transaction=False) as p:
            for sid, infos in zip(stream_ids, slots, strict=True):
                for s in infos:
                    p.strlen(self.key(sid, f"thumb:{s.slot_id}"))
            thumbs = iter(p.execute())
        out = {}
        for sid, meta, infos in zip(stream_ids, metas, slots, strict=True):
            dim, dtype = meta.get("dim"), meta.get("dtype")
            width = int(dim) * np.dtype(dtype).itemsize if dim is not None and dtype is not None else 0
            grids = sum(s.side * s.side for s in infos) * width
            out[sid] = Footprint(
                tokens=layout_cost([s.side for s in infos], [s.text for s in infos]),
                memory_bytes=grids + sum(int(next(thumbs) or 0) for _ in infos),
            )
        return out


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a stream's memory costs: the prompt tokens it holds (``layout_cost``, as answers count
    them), and the bytes its token grids (from the slots' sides, D and dtype) and thumbnails take in
    Redis (frames waiting for an encoder not included)."""

    tokens: int
    memory_bytes: int


def _decode(meta: dict[Any, Any]) -> dict[str, str]:
    """A Redis hash reply with its keys and values as text."""
    return {text(k): text(v) for k, v in meta.items()}


def _config_from_meta(meta: dict[Any, Any]) -> MemoryConfig:
    m = _decode(meta)
    dtype: StorageDtype = "float32" if m["dtype"] == "float32" else "float16"
    return MemoryConfig(
        budget=int(m["budget"]),
        s_max=int(m["s_max"]),
        dim=int(m["dim"]),
        text_tokens=int(m["text_tokens"]),
        min_side=int(m["min_side"]),
        policy=m["policy"],
        dtype=dtype,
        backend=m.get("backend", ""),
    )
