"""The bounded visual memory of one stream, stored in Redis.

Per stream, an ordered list of slots. Slots get the side of the paper's rule, computed
on what their timestamp texts leave of the budget, and the newest ones get one more
(``compressor.plan_sides``); when an append makes a slot's side fall, it is re-pooled in
place. Once the base side is ``min_side`` and another slot would not fit, the
lowest-scoring adjacent pair (``merge.MergePolicy``) is merged temporally, so

    layout_cost(sides, text_costs) <= budget

holds after every write, for streams of any length.

Appends are idempotent and ordered by frame sequence number: the memory holds exactly
the frames ``0 .. next_seq - 1``. A frame that arrives ahead of its predecessors waits
in a small ``pending`` hash until the gap closes; a frame below ``next_seq`` is a retry
and is ignored. Every write runs as one optimistic transaction (WATCH on the meta key,
MULTI/EXEC), so concurrent writers never break the invariant.

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

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
import redis

from core.errors import VidmemError
from model.compressor import BudgetError, fits, layout_cost, max_slots, merge_tokens, plan_sides, pool
from model.merge import get_policy
from model.slots import EncodedFrame, Slot

StorageDtype = Literal["float16", "float32"]


class _Stale(Exception):
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


class UnknownStream(VidmemError, KeyError):
    """No memory exists for this stream id."""

    code = "unknown_stream"

    def __str__(self) -> str:
        return f"unknown stream {self.args[0]!r}"


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Per-stream memory parameters, fixed when the memory is created.

    budget:      max prompt tokens of the memory (visual tokens + per-slot timestamp text).
    s_max:       the backend's native grid side (14 for LLaVA-OneVision video).
    dim:         token width D.
    text_tokens: the most tokens one slot's timestamp text may take (0: no timestamps, the
                 paper's pure rule). Each frame brings its own exact count (``EncodedFrame``).
    min_side:    smallest grid side before slots merge temporally.
    policy:      merge policy name (``merge.POLICIES``).
    dtype:       storage dtype of the tokens.
    """

    budget: int
    s_max: int
    dim: int
    text_tokens: int = 0
    min_side: int = 1
    policy: str = "similar"
    dtype: StorageDtype = "float16"

    def __post_init__(self) -> None:
        if self.s_max < 1 or self.dim < 1 or not 1 <= self.min_side <= self.s_max:
            raise ValueError(f"bad memory geometry: {self}")
        if max_slots(self.budget, self.text_tokens, self.min_side) < 2:
            raise ValueError(f"budget {self.budget} holds fewer than 2 slots at side {self.min_side}")
        get_policy(self.policy)

    @property
    def max_slots(self) -> int:
        """The most slots the memory can ever hold (every timestamp at its cheapest, 1 token)."""
        return max_slots(self.budget, 1 if self.text_tokens else 0, self.min_side)


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """A slot's metadata without its tokens."""

    slot_id: int
    t0: float
    t1: float
    seq_lo: int
    seq_hi: int
    side: int
    wall0: float | None = None
    wall1: float | None = None
    text: int = 0  # tokens of its timestamp text in the prompt

    @property
    def frames(self) -> int:
        return self.seq_hi - self.seq_lo + 1

    def to_json(self) -> str:
        return json.dumps(
            [self.t0, self.t1, self.seq_lo, self.seq_hi, self.side, self.wall0, self.wall1, self.text]
        )

    @classmethod
    def from_json(cls, slot_id: int, raw: bytes | str) -> SlotInfo:
        t0, t1, lo, hi, side, w0, w1, text = json.loads(raw)
        return cls(slot_id, t0, t1, lo, hi, side, w0, w1, text)


@dataclass(frozen=True, slots=True)
class MemoryState:
    """A consistent view of one stream's memory. ``slots`` in time order."""

    stream_id: str
    config: MemoryConfig
    version: int
    next_seq: int
    side: int
    slots: tuple[SlotInfo, ...]
    tokens: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def tokens_used(self) -> int:
        return layout_cost([s.side for s in self.slots], [s.text for s in self.slots])

    def as_slots(self) -> list[Slot]:
        """The slots with their tokens (requires a state read with tokens)."""
        return [
            Slot(s.slot_id, s.t0, s.t1, s.seq_lo, s.seq_hi, s.side, self.tokens[s.slot_id], s.text)
            for s in self.slots
        ]


_HEADER = struct.Struct("<I")


def _pack_frame(f: EncodedFrame) -> bytes:
    head = json.dumps(
        [f.seq, f.t, f.wall_time, list(f.tokens.shape), str(f.tokens.dtype), len(f.thumb), f.text_tokens]
    ).encode()
    return _HEADER.pack(len(head)) + head + f.thumb + np.ascontiguousarray(f.tokens).tobytes()


def _unpack_frame(raw: bytes) -> EncodedFrame:
    (n,) = _HEADER.unpack_from(raw)
    seq, t, wall, shape, dtype, n_thumb, text = json.loads(raw[_HEADER.size : _HEADER.size + n])
    body = _HEADER.size + n
    thumb = raw[body : body + n_thumb]
    tokens = np.frombuffer(raw[body + n_thumb :], dtype=dtype).reshape(shape)
    return EncodedFrame(seq=seq, t=t, tokens=tokens, thumb=thumb, wall_time=wall, text_tokens=text)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """meta, slots, pairs and the pending seqs of one stream, read in one MULTI (consistent)."""

    meta: dict[str, str]
    slots: dict[Any, Any]
    pairs: dict[Any, Any]
    waiting: set[int]


class _Work:
    """The in-Python working copy of one append: slot metadata, lazily loaded tokens, changes."""

    def __init__(self, mem: TokenMemory, pipe: Any, sid: str, cfg: MemoryConfig, snap: _Snapshot) -> None:
        self.mem, self.pipe, self.sid, self.cfg = mem, pipe, sid, cfg
        self.policy = get_policy(cfg.policy)
        self.side = int(snap.meta["side"])
        self.next_id = int(snap.meta["next_slot_id"])
        infos = [SlotInfo.from_json(int(k), v) for k, v in snap.slots.items()]
        self.order: list[SlotInfo] = sorted(infos, key=lambda s: s.seq_lo)
        self.pairs: dict[int, float] = {int(k): float(v) for k, v in snap.pairs.items()}
        self.tokens: dict[int, np.ndarray] = {}
        self.thumbs: dict[int, bytes] = {}
        self.dirty_tokens: set[int] = set()
        self.removed: set[int] = set()
        self.dirty_pairs: set[int] = set()

    def load(self, slot_id: int) -> np.ndarray:
        if slot_id not in self.tokens:
            info = next(s for s in self.order if s.slot_id == slot_id)
            raw = self.pipe.get(self.mem.key(self.sid, f"tok:{slot_id}"))
            self.tokens[slot_id] = _grid(raw, info.side, self.cfg.dim, self.cfg.dtype)
        return self.tokens[slot_id]

    def texts(self) -> list[int]:
        return [s.text for s in self.order]

    def apply_sides(self) -> None:
        """Re-pool every slot above its planned side (sides only ever fall)."""
        sides = plan_sides(self.texts(), self.cfg.budget, self.cfg.s_max, self.cfg.min_side)
        for i, (info, side) in enumerate(zip(self.order, sides, strict=True)):
            if info.side > side:
                self.tokens[info.slot_id] = pool(self.load(info.slot_id), side)
                self.order[i] = replace(info, side=side)
                self.dirty_tokens.add(info.slot_id)
        self.side = min(sides)

    def add(self, f: EncodedFrame) -> None:
        """Append a frame's slot, pooled to the largest side any slot can have after this append."""
        sid = self.next_id
        self.next_id += 1
        side = min(f.tokens.shape[0], self.side + 1, self.cfg.s_max)
        toks = pool(f.tokens.astype(self.cfg.dtype), side)
        self.order.append(
            SlotInfo(sid, f.t, f.t, f.seq, f.seq, side, f.wall_time, f.wall_time, f.text_tokens)
        )
        self.tokens[sid] = toks
        self.thumbs[sid] = f.thumb
        self.dirty_tokens.add(sid)
        self._rescore(len(self.order) - 2)

    def _mean(self, i: int) -> np.ndarray | None:
        if not self.policy.needs_tokens:
            return None
        return self.load(self.order[i].slot_id).reshape(-1, self.cfg.dim).astype(np.float32).mean(axis=0)

    def _rescore(self, i: int) -> None:
        """Re-score the pair (order[i], order[i+1]) if both exist."""
        if i < 0 or i + 1 >= len(self.order):
            return
        left, right = self.order[i], self.order[i + 1]
        self.pairs[left.slot_id] = self.policy.score(
            left.frames, right.frames, self._mean(i), self._mean(i + 1)
        )
        self.dirty_pairs.add(left.slot_id)

    def merge_one(self) -> None:
        """Merge the lowest-scoring adjacent pair (oldest on ties)."""
        pos = {s.slot_id: i for i, s in enumerate(self.order)}
        left_id = min(self.pairs, key=lambda k: (self.pairs[k], self.order[pos[k]].seq_lo))
        i = pos[left_id]
        left, right = self.order[i], self.order[i + 1]
        side = min(left.side, right.side)
        a, b = pool(self.load(left.slot_id), side), pool(self.load(right.slot_id), side)
        self.tokens[left.slot_id] = merge_tokens(a, left.frames, b, right.frames)
        self.dirty_tokens.add(left.slot_id)
        # the merged slot keeps the left one's start time, hence its timestamp text
        self.order[i] = SlotInfo(
            left.slot_id,
            left.t0,
            right.t1,
            left.seq_lo,
            right.seq_hi,
            side,
            left.wall0,
            right.wall1,
            left.text,
        )
        del self.order[i + 1]
        self.pairs.pop(right.slot_id, None)
        self.tokens.pop(right.slot_id, None)
        self.thumbs.pop(right.slot_id, None)
        self.dirty_tokens.discard(right.slot_id)
        self.removed.add(right.slot_id)
        if i + 1 >= len(self.order):  # left is now the last slot: it has no right neighbour
            self.pairs.pop(left.slot_id, None)
            self.dirty_pairs.add(left.slot_id)
        self._rescore(i - 1)
        self._rescore(i)


class TokenMemory:
    """Per-stream bounded token memories in one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str = "vm") -> None:
        self.r = client
        self.prefix = prefix

    def key(self, sid: str, part: str) -> str:
        return f"{self.prefix}:{{{sid}}}:{part}"

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
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(meta)
                    if pipe.exists(meta):
                        pipe.unwatch()
                        return self.config(sid)
                    pipe.multi()
                    pipe.hset(meta, mapping=fields)
                    pipe.execute()
                    return cfg
                except redis.WatchError:
                    continue

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
        meta_key = self.key(sid, "meta")
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(meta_key)
                    return self._append_once(pipe, sid, frames)
                except (redis.WatchError, _Stale):
                    pipe.reset()

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
        meta = snap.meta
        if not meta:
            raise UnknownStream(sid)
        cfg = _config_from_meta(meta)
        next_seq = int(meta["next_seq"])
        for f in frames:
            if f.tokens.shape[-1] != cfg.dim or f.tokens.shape[0] != f.tokens.shape[1]:
                raise ValueError(f"frame {f.seq}: tokens {f.tokens.shape} do not fit [s, s, {cfg.dim}]")
            lo = 1 if cfg.text_tokens else 0
            if not lo <= f.text_tokens <= cfg.text_tokens:
                raise BudgetError(
                    f"frame {f.seq}: timestamp text of {f.text_tokens} tokens, the memory allows "
                    f"{lo}..{cfg.text_tokens} per slot"
                )
        pend_key = self.key(sid, "pending")
        waiting = snap.waiting
        fresh = {f.seq: f for f in frames if f.seq >= next_seq}
        run: list[EncodedFrame] = []
        seq = next_seq
        while seq in fresh or seq in waiting:
            run.append(fresh[seq] if seq in fresh else _unpack_frame(_blob(pipe.hget(pend_key, str(seq)))))
            seq += 1
        stage = {s: f for s, f in fresh.items() if s >= seq and s not in waiting}
        work = _Work(self, pipe, sid, cfg, snap) if run else None
        if work is not None:
            for i, f in enumerate(run, 1):
                work.add(f)
                while not fits(work.texts(), cfg.budget, cfg.min_side):
                    work.merge_one()
                if i % 64 == 0:  # long batches: keep new slots small as they come
                    work.apply_sides()
            work.apply_sides()
            cost = layout_cost([s.side for s in work.order], work.texts())
            if cost > cfg.budget:
                raise BudgetError(f"memory {sid} would cost {cost} tokens over its budget {cfg.budget}")
        pipe.multi()
        pipe.hincrby(self.key(sid, "meta"), "version", 1)
        if stage:
            pipe.hset(pend_key, mapping={str(s): _pack_frame(f) for s, f in stage.items()})
        if work is not None:
            self._write(pipe, sid, work, consumed=[f.seq for f in run if f.seq in waiting], next_seq=seq)
        pipe.execute()
        return seq

    def _write(self, pipe: Any, sid: str, work: _Work, consumed: list[int], next_seq: int) -> None:
        pipe.hset(
            self.key(sid, "meta"),
            mapping={
                "side": work.side,
                "n_slots": len(work.order),
                "next_seq": next_seq,
                "next_slot_id": work.next_id,
            },
        )
        if consumed:
            pipe.hdel(self.key(sid, "pending"), *[str(s) for s in consumed])
        infos = {s.slot_id: s for s in work.order}
        changed = {i: infos[i].to_json() for i in work.dirty_tokens if i in infos}
        if changed:
            pipe.hset(self.key(sid, "slots"), mapping=changed)
        for i in work.dirty_tokens:
            if i in infos:
                pipe.set(self.key(sid, f"tok:{i}"), np.ascontiguousarray(work.tokens[i]).tobytes())
        for i, thumb in work.thumbs.items():
            if i in infos and thumb:
                pipe.set(self.key(sid, f"thumb:{i}"), thumb)
        if work.removed:
            pipe.hdel(self.key(sid, "slots"), *work.removed)
            pipe.hdel(self.key(sid, "pairs"), *work.removed)
            pipe.delete(*[self.key(sid, f"tok:{i}") for i in work.removed])
            pipe.delete(*[self.key(sid, f"thumb:{i}") for i in work.removed])
        scores = {i: work.pairs[i] for i in work.dirty_pairs if i in work.pairs}
        gone = [i for i in work.dirty_pairs if i not in work.pairs and i not in work.removed]
        if scores:
            pipe.hset(self.key(sid, "pairs"), mapping=scores)
        if gone:
            pipe.hdel(self.key(sid, "pairs"), *gone)

    # ---- reads -----------------------------------------------------------------------------

    def state(self, sid: str, with_tokens: bool = False) -> MemoryState:
        """A consistent snapshot (retried if a writer commits while it is read)."""
        meta_key = self.key(sid, "meta")
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(meta_key)
                    meta = _decode(pipe.hgetall(meta_key))
                    if not meta:
                        raise UnknownStream(sid)
                    cfg = _config_from_meta(meta)
                    raw = pipe.hgetall(self.key(sid, "slots"))
                    infos = sorted(
                        (SlotInfo.from_json(int(k), v) for k, v in raw.items()), key=lambda s: s.seq_lo
                    )
                    tokens: dict[int, np.ndarray] = {}
                    if with_tokens and infos:
                        blobs = cast(
                            list[bytes | None], pipe.mget([self.key(sid, f"tok:{s.slot_id}") for s in infos])
                        )
                        for s, blob in zip(infos, blobs, strict=True):
                            tokens[s.slot_id] = _grid(blob, s.side, cfg.dim, cfg.dtype)
                    pipe.multi()
                    pipe.execute()  # fails with WatchError if a writer committed meanwhile
                    return MemoryState(
                        stream_id=sid,
                        config=cfg,
                        version=int(meta["version"]),
                        next_seq=int(meta["next_seq"]),
                        side=int(meta["side"]),
                        slots=tuple(infos),
                        tokens=tokens,
                    )
                except (redis.WatchError, _Stale):
                    pipe.reset()

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
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in meta.items()
    }


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
    )


def frames_in(state: MemoryState) -> Iterable[int]:
    """Every frame sequence number the memory covers, in order (for checks and tests)."""
    for s in state.slots:
        yield from range(s.seq_lo, s.seq_hi + 1)
