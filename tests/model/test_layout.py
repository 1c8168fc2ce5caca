"""The pure layout plan of a memory, without Redis: intake, re-pooling, the merge choice, the changes."""

from __future__ import annotations

import numpy as np
import pytest

from model.compressor import BudgetError, layout_cost, plan_sides, pool
from model.layout import Changes, Layout, check_frame, intake, pick_pair
from model.slots import EncodedFrame, MemoryConfig, SlotInfo

D = 8


def frame(seq: int, s: int = 14, text: int = 0) -> EncodedFrame:
    toks = np.random.default_rng(seq).standard_normal((s, s, D)).astype(np.float32)
    return EncodedFrame(seq=seq, t=float(seq), tokens=toks, thumb=b"jpg%d" % seq, text_tokens=text)


class DictMemory:
    """What the store keeps, in dicts: slots, tokens, pair scores, the base side, the next slot id.

    Applies a layout's ``Changes`` the way ``TokenMemory`` writes them, and counts token loads.
    """

    def __init__(self, cfg: MemoryConfig) -> None:
        self.cfg = cfg
        self.slots: dict[int, SlotInfo] = {}
        self.tokens: dict[int, np.ndarray] = {}
        self.thumbs: dict[int, bytes] = {}
        self.scores: dict[int, float] = {}
        self.side, self.next_id, self.loads = cfg.s_max, 0, 0

    def load(self, info: SlotInfo) -> np.ndarray:
        self.loads += 1
        toks = self.tokens[info.slot_id]
        assert toks.shape == (info.side, info.side, D)  # the loader sees the stored side
        return toks

    def layout(self) -> Layout:
        return Layout(
            self.cfg, self.slots.values(), self.scores, side=self.side, next_id=self.next_id, load=self.load
        )

    def append(self, frames: list[EncodedFrame]) -> Changes:
        ch = self.layout().extend(frames)
        infos = {s.slot_id: s for s in ch.slots}
        self.slots.update({i: infos[i] for i in ch.tokens})
        self.tokens.update(ch.tokens)
        self.thumbs.update(ch.thumbs)
        for i in ch.removed:
            for d in (self.slots, self.tokens, self.thumbs, self.scores):
                d.pop(i, None)
        self.scores.update(ch.scores)
        for i in ch.unscored:
            self.scores.pop(i, None)
        self.side, self.next_id = ch.side, ch.next_id
        assert sorted(self.slots.values(), key=lambda s: s.seq_lo) == list(ch.slots)
        return ch

    def order(self) -> list[SlotInfo]:
        return sorted(self.slots.values(), key=lambda s: s.seq_lo)


def check(mem: DictMemory, n_frames: int) -> None:
    """The budget, the plan and exactly-once frames, as the store's tests check them."""
    order, cfg = mem.order(), mem.cfg
    texts = [s.text for s in order]
    assert layout_cost([s.side for s in order], texts) <= cfg.budget
    assert [q for s in order for q in range(s.seq_lo, s.seq_hi + 1)] == list(range(n_frames))
    planned = plan_sides(texts, cfg.budget, cfg.s_max, cfg.min_side)
    assert all(s.side <= p for s, p in zip(order, planned, strict=True))
    assert all(mem.tokens[s.slot_id].shape == (s.side, s.side, D) for s in order)
    assert set(mem.scores) == {s.slot_id for s in order[:-1]}  # one score per adjacent pair


def test_intake_orders_frames_against_next_seq_and_the_waiting_ones() -> None:
    waiting = {q: frame(q, 2) for q in (5, 7)}
    loaded: list[int] = []

    def load_waiting(seq: int) -> EncodedFrame:
        loaded.append(seq)
        return waiting[seq]

    got = intake([frame(q, 2) for q in (3, 2, 4, 9, 6)], 3, set(waiting), load_waiting)
    assert [f.seq for f in got.run] == [3, 4, 5, 6, 7]  # 2 is a retry; 5 and 7 come from pending
    assert loaded == [5, 7] and got.consumed == (5, 7) and got.next_seq == 8
    assert list(got.stage) == [9]  # ahead of the gap at 8: it waits
    ahead = intake([frame(4, 2)], 3, set(), load_waiting)
    assert ahead.run == () and list(ahead.stage) == [4] and ahead.next_seq == 3


def test_pick_pair_takes_the_lowest_score_and_the_oldest_on_ties() -> None:
    assert pick_pair({10: 0.5, 11: 0.2, 12: 0.9}, {10: 0, 11: 1, 12: 2}) == 11
    assert pick_pair({10: 0.3, 11: 0.2, 12: 0.2}, {10: 0, 11: 5, 12: 3}) == 12


def test_history_side_falls_then_uniform_merges_keep_equal_spans() -> None:
    cfg = MemoryConfig(budget=200, s_max=14, dim=D, policy="uniform")
    mem = DictMemory(cfg)
    sides = []
    for seq in range(400):
        mem.append([frame(seq)])
        sides.append(mem.side)
        if seq % 37 == 0:
            check(mem, seq + 1)
    assert sides[0] == 14 and sides[-1] == 1
    assert sides == sorted(sides, reverse=True)
    assert len(mem.slots) == cfg.max_slots == 200
    assert {s.frames for s in mem.order()} == {2}
    check(mem, 400)


def test_one_long_batch_plans_the_same_budget_and_frames() -> None:
    cfg = MemoryConfig(budget=1024, s_max=14, dim=D, text_tokens=8)
    mem = DictMemory(cfg)
    ch = mem.append([frame(i, text=5) for i in range(60)])
    assert [s.side for s in ch.slots] == [3] * 34 + [4] * 26
    assert ch.cost == 34 * 14 + 26 * 21 == 1022 and ch.side == 3 and ch.next_id == 60
    assert ch.removed == frozenset() and len(ch.thumbs) == 60 and mem.loads == 0  # nothing stored yet
    check(mem, 60)


def test_repool_lowers_the_stored_slots_in_place() -> None:
    cfg = MemoryConfig(budget=196 * 4, s_max=14, dim=D, policy="uniform")
    mem = DictMemory(cfg)
    mem.append([frame(i) for i in range(4)])
    assert [s.side for s in mem.order()] == [14] * 4
    before = {i: t.copy() for i, t in mem.tokens.items()}
    ch = mem.append([frame(4)])  # 5 slots: 784 / 5 -> side 12; the remainder raises the newest two to 13
    assert [s.side for s in ch.slots] == [12, 12, 12, 13, 13] and ch.side == 12
    assert set(ch.tokens) == set(range(5))  # the four re-pooled ones and the new one
    for i, side in enumerate([12, 12, 12, 13]):
        np.testing.assert_array_equal(ch.tokens[i], pool(before[i], side))
    assert list(ch.thumbs) == [4] and mem.loads == 4 and ch.removed == frozenset()
    check(mem, 5)


def test_similar_merge_choice_keeps_the_distinct_moments() -> None:
    mem = DictMemory(MemoryConfig(budget=4, s_max=2, dim=D, policy="similar"))
    for seq, v in enumerate([1.0, 1.01, 0.99, -5.0, 9.0]):
        toks = np.full((2, 2, D), v, dtype=np.float32)
        toks[..., 0] = seq % 2
        ch = mem.append([EncodedFrame(seq=seq, t=float(seq), tokens=toks)])
    assert [(s.seq_lo, s.seq_hi) for s in mem.order()][-2:] == [(3, 3), (4, 4)]
    assert ch.removed and not ch.removed & {s.slot_id for s in ch.slots}
    (merged,) = [s for s in mem.order() if s.frames > 1]  # one merge: 5 frames, 4 slots
    assert (merged.t0, merged.t1) == (float(merged.seq_lo), float(merged.seq_hi))
    check(mem, 5)


def test_a_merge_of_the_last_pair_drops_its_score() -> None:
    mem = DictMemory(MemoryConfig(budget=2, s_max=1, dim=D, policy="uniform"))
    mem.append([frame(0, 1), frame(1, 1)])
    assert mem.scores == {0: 2.0}
    ch = mem.append([frame(2, 1)])  # both pairs cover 2 frames: the oldest merges
    assert [(s.seq_lo, s.seq_hi) for s in ch.slots] == [(0, 1), (2, 2)]
    assert ch.removed == {1} and ch.scores == {0: 3.0} and ch.unscored == frozenset()
    ch = mem.append([frame(3, 1)])  # (2, 3) covers 2 frames, (0-1, 2) 3: the last pair merges
    assert [(s.seq_lo, s.seq_hi) for s in ch.slots] == [(0, 1), (2, 3)]
    assert ch.removed == {3} and ch.scores == {0: 4.0} and ch.unscored == {2}
    check(mem, 4)


def test_check_frame_refuses_what_does_not_fit() -> None:
    cfg = MemoryConfig(budget=300, s_max=14, dim=D, text_tokens=8, min_side=2)
    check_frame(cfg, frame(0, text=8))
    with pytest.raises(BudgetError, match="timestamp text of 9 tokens"):
        check_frame(cfg, frame(0, text=9))
    with pytest.raises(BudgetError, match="timestamp text of 0 tokens"):
        check_frame(cfg, frame(0, text=0))
    with pytest.raises(ValueError, match="do not fit"):
        check_frame(cfg, EncodedFrame(0, 0.0, np.zeros((4, 4, D + 1), np.float32), text_tokens=1))
