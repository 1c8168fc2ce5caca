"""The layout plan of one stream's memory: which slots, at which sides, after an append. Pure numpy.

Slots get the side of the paper's rule, computed on what their timestamp texts leave of the
budget, and the newest ones get one more (``compressor.plan_sides``); when an append makes a
slot's side fall, it is re-pooled in place. Once the base side is ``min_side`` and another slot
would not fit, the lowest-scoring adjacent pair (``merge.MergePolicy``, the oldest pair on ties)
is merged temporally, so

    layout_cost(sides, text_costs) <= budget

holds after every append, for streams of any length.

Two steps, both without I/O:

* ``intake`` orders an append's frames against the memory's ``next_seq`` and the seqs waiting
  in its pending set: the contiguous run that extends the memory now, the frames that must wait
  for a predecessor, the waiting ones the run takes.
* ``Layout`` starts from the slots a memory holds (metadata, cached pair scores, and a loader that
  returns a slot's tokens on demand), takes the run, and says what changed (``Changes``).

Knows nothing about where slots are stored: ``model.memory`` reads them from Redis and writes
the ``Changes`` back in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from model.compressor import BudgetError, fits, layout_cost, merge_tokens, plan_sides, pool
from model.merge import get_policy
from model.slots import EncodedFrame, MemoryConfig, SlotInfo

TokenLoader = Callable[[SlotInfo], np.ndarray]
"""A stored slot's tokens: [side, side, D] in the storage dtype."""

REPOOL_EVERY = 64
"""In long batches, re-plan the sides every this many frames, so new slots stay small as they come."""


def check_frame(cfg: MemoryConfig, f: EncodedFrame) -> None:
    """Refuse a frame whose tokens or timestamp text do not fit the memory's geometry."""
    if f.tokens.shape[-1] != cfg.dim or f.tokens.shape[0] != f.tokens.shape[1]:
        raise ValueError(f"frame {f.seq}: tokens {f.tokens.shape} do not fit [s, s, {cfg.dim}]")
    lo = 1 if cfg.text_tokens else 0
    if not lo <= f.text_tokens <= cfg.text_tokens:
        raise BudgetError(
            f"frame {f.seq}: timestamp text of {f.text_tokens} tokens, the memory allows "
            f"{lo}..{cfg.text_tokens} per slot"
        )


@dataclass(frozen=True, slots=True)
class Intake:
    """Where the frames of one append go.

    run:      the frames that extend the memory now, in seq order (``next_seq`` upwards).
    stage:    frames ahead of a gap, by seq: they wait (pending) for their predecessors.
    consumed: waiting seqs the run takes (to drop from pending).
    next_seq: the memory's next_seq after the run.
    """

    run: tuple[EncodedFrame, ...]
    stage: dict[int, EncodedFrame]
    consumed: tuple[int, ...]
    next_seq: int


def intake(
    frames: Iterable[EncodedFrame],
    next_seq: int,
    waiting: set[int],
    load_waiting: Callable[[int], EncodedFrame],
) -> Intake:
    """Sort an append's frames: a seq below ``next_seq`` is a retry and is ignored.

    load_waiting: the waiting frame of a seq (only called for seqs in ``waiting`` the run needs).
    """
    fresh = {f.seq: f for f in frames if f.seq >= next_seq}
    run: list[EncodedFrame] = []
    seq = next_seq
    while seq in fresh or seq in waiting:
        run.append(fresh[seq] if seq in fresh else load_waiting(seq))
        seq += 1
    stage = {s: f for s, f in fresh.items() if s >= seq and s not in waiting}
    consumed = tuple(f.seq for f in run if f.seq in waiting)
    return Intake(tuple(run), stage, consumed, seq)


def pick_pair(scores: Mapping[int, float], seq_lo: Mapping[int, int]) -> int:
    """The merge choice: the left slot id of the lowest-scoring pair, the oldest on ties."""
    return min(scores, key=lambda k: (scores[k], seq_lo[k]))


@dataclass(frozen=True, slots=True)
class Changes:
    """What an append changed, for the store to write.

    slots:    the whole layout after the append, in time order.
    side:     its base (smallest) side.
    next_id:  the next free slot id.
    tokens:   slot id -> [side, side, D] storage-dtype tokens of every slot whose tokens or
              metadata changed (new, re-pooled or merged).
    thumbs:   new slots' thumbnails (non-empty ones).
    removed:  slot ids merged away: their metadata, pair score, tokens and thumbnail go.
    scores:   pair scores to set (left slot id -> score of it and its right neighbour).
    unscored: left slot ids that lost their pair score (now the last slot).
    """

    slots: tuple[SlotInfo, ...]
    side: int
    next_id: int
    tokens: dict[int, np.ndarray]
    thumbs: dict[int, bytes]
    removed: frozenset[int]
    scores: dict[int, float]
    unscored: frozenset[int]

    @property
    def cost(self) -> int:
        return layout_cost([s.side for s in self.slots], [s.text for s in self.slots])


class Layout:
    """The working copy of one memory during an append: slot metadata, tokens loaded on demand."""

    def __init__(
        self,
        cfg: MemoryConfig,
        slots: Iterable[SlotInfo],
        scores: Mapping[int, float],
        *,
        side: int,
        next_id: int,
        load: TokenLoader,
    ) -> None:
        """slots: the stored slots (any order); scores: the cached pair scores; side: the base side."""
        self.cfg, self.side, self.next_id, self._load = cfg, side, next_id, load
        self.policy = get_policy(cfg.policy)
        self.order: list[SlotInfo] = sorted(slots, key=lambda s: s.seq_lo)
        self.pairs: dict[int, float] = dict(scores)
        self.tokens: dict[int, np.ndarray] = {}
        self.thumbs: dict[int, bytes] = {}
        self.dirty_tokens: set[int] = set()
        self.removed: set[int] = set()
        self.dirty_pairs: set[int] = set()

    def extend(self, run: Sequence[EncodedFrame]) -> Changes:
        """Append the run's frames in order, merging and re-pooling to stay within the budget."""
        for i, f in enumerate(run, 1):
            self.add(f)
            while not fits(self.texts(), self.cfg.budget, self.cfg.min_side):
                self.merge_one()
            if i % REPOOL_EVERY == 0:
                self.apply_sides()
        self.apply_sides()
        return self.changes()

    def load(self, slot_id: int) -> np.ndarray:
        if slot_id not in self.tokens:
            self.tokens[slot_id] = self._load(next(s for s in self.order if s.slot_id == slot_id))
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
        self.order.append(
            SlotInfo(sid, f.t, f.t, f.seq, f.seq, side, f.wall_time, f.wall_time, f.text_tokens)
        )
        self.tokens[sid] = pool(f.tokens.astype(self.cfg.dtype), side)
        self.thumbs[sid] = f.thumb
        self.dirty_tokens.add(sid)
        self._rescore(len(self.order) - 2)

    def merge_one(self) -> None:
        """Merge the lowest-scoring adjacent pair (``pick_pair``) into its left slot."""
        pos = {s.slot_id: i for i, s in enumerate(self.order)}
        i = pos[pick_pair(self.pairs, {k: self.order[pos[k]].seq_lo for k in self.pairs})]
        left, right = self.order[i], self.order[i + 1]
        side = min(left.side, right.side)
        a, b = pool(self.load(left.slot_id), side), pool(self.load(right.slot_id), side)
        self.tokens[left.slot_id] = merge_tokens(a, left.frames, b, right.frames)
        self.dirty_tokens.add(left.slot_id)
        # the merged slot keeps the left one's start time, hence its timestamp text
        self.order[i] = replace(left, t1=right.t1, seq_hi=right.seq_hi, side=side, wall1=right.wall1)
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

    def changes(self) -> Changes:
        """What differs from the stored memory so far; raises BudgetError if it would not fit."""
        infos = {s.slot_id for s in self.order}
        out = Changes(
            slots=tuple(self.order),
            side=self.side,
            next_id=self.next_id,
            tokens={i: self.tokens[i] for i in self.dirty_tokens if i in infos},
            thumbs={i: t for i, t in self.thumbs.items() if i in infos and t},
            removed=frozenset(self.removed),
            scores={i: self.pairs[i] for i in self.dirty_pairs if i in self.pairs},
            unscored=frozenset(i for i in self.dirty_pairs if i not in self.pairs and i not in self.removed),
        )
        if out.cost > self.cfg.budget:
            raise BudgetError(f"the layout would cost {out.cost} tokens over its budget {self.cfg.budget}")
        return out

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
