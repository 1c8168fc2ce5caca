"""The Redis token memory: budget rule, re-pooling, merging, idempotency, consistency."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from core.errors import VidmemError
from model import memory
from model.compressor import BudgetError, layout_cost, plan_sides
from model.memory import MemoryBusy, TokenMemory, UnknownStream
from model.slots import EncodedFrame, MemoryConfig, MemoryState, frames_in
from tests.writers import append_concurrently

D = 8


def frame(seq: int, s: int = 14, text: int = 0) -> EncodedFrame:
    toks = np.random.default_rng(seq).standard_normal((s, s, D)).astype(np.float32)
    return EncodedFrame(seq=seq, t=float(seq), tokens=toks, thumb=b"jpg%d" % seq, text_tokens=text)


def check(mem: TokenMemory, sid: str, n_frames: int) -> None:
    st = mem.state(sid, with_tokens=True)
    cfg = st.config
    assert st.tokens_used <= cfg.budget
    assert list(frames_in(st)) == list(range(n_frames))
    assert st.next_seq == n_frames
    texts = [s.text for s in st.slots]
    planned = plan_sides(texts, cfg.budget, cfg.s_max, cfg.min_side)
    assert all(s.side <= p for s, p in zip(st.slots, planned, strict=True))  # never above plan
    for s in st.slots:
        assert st.tokens[s.slot_id].shape == (s.side, s.side, D)
    assert st.tokens_used == layout_cost([s.side for s in st.slots], texts)


def test_short_stream_keeps_full_detail(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=196 * 8, s_max=14, dim=D))
    f = frame(0)
    mem.append("s", [f])
    st = mem.state("s", with_tokens=True)
    assert st.side == 14 and st.tokens_used == 196
    np.testing.assert_allclose(st.tokens[st.slots[0].slot_id], f.tokens.astype(np.float16))
    assert mem.thumbnail("s", st.slots[0].slot_id) == b"jpg0"


def test_side_falls_as_stream_grows_then_merges(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    cfg = MemoryConfig(budget=200, s_max=14, dim=D, policy="uniform")
    mem.create("s", cfg)
    sides = []
    for seq in range(400):
        mem.append("s", [frame(seq)])
        sides.append(mem.state("s").side)
        if seq % 37 == 0:
            check(mem, "s", seq + 1)
    assert sides[0] == 14 and sides[-1] == 1
    assert sides == sorted(sides, reverse=True)  # compression only rises (the base side)
    st = mem.state("s")
    assert len(st.slots) == cfg.max_slots == 200
    # the uniform policy keeps spans about equal: 400 frames in 200 slots -> 2 each
    assert {s.frames for s in st.slots} == {2}
    check(mem, "s", 400)


def test_text_tokens_count_against_the_budget(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    cfg = MemoryConfig(budget=300, s_max=14, dim=D, text_tokens=8, min_side=2)
    mem.create("s", cfg)
    mem.append("s", [frame(i, text=8) for i in range(100)])
    st = mem.state("s")
    assert len(st.slots) == 300 // (4 + 8) and st.side == 2
    assert st.tokens_used <= 300
    check(mem, "s", 100)
    with pytest.raises(BudgetError, match="timestamp text of 9 tokens"):
        mem.append("s", [frame(100, text=9)])  # more than the memory allows per slot
    with pytest.raises(BudgetError, match="timestamp text of 0 tokens"):
        mem.append("s", [frame(100, text=0)])  # timestamps on: every slot has one


def test_budget_left_by_the_floor_goes_to_the_newest_slots(fake_redis: redis.Redis) -> None:
    # 60 slots, 5 text tokens each: (1024 - 300) / 60 = 12.07 -> side 3 leaves 184 tokens,
    # enough to raise the newest 26 slots to side 4 (7 tokens each).
    assert plan_sides([5] * 60, 1024, 14) == [3] * 34 + [4] * 26
    assert plan_sides([0] * 4, 196 * 8, 14) == [14] * 4  # short streams keep full detail
    assert plan_sides([0] * 10, 100, 14) == [3] * 9 + [4]  # 10 x 9 = 90; 10 left, 7 per raise -> 1
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=1024, s_max=14, dim=D, text_tokens=8))
    mem.append("s", [frame(i, text=5) for i in range(60)])
    st = mem.state("s")
    assert [s.side for s in st.slots] == [3] * 34 + [4] * 26
    assert st.tokens_used == 34 * 14 + 26 * 21 == 1022
    check(mem, "s", 60)


def test_similar_policy_merges_the_look_alikes(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=4, s_max=2, dim=D, policy="similar"))
    # frames 0-2 look alike, frame 3 and 4 are distinct
    vals = [1.0, 1.01, 0.99, -5.0, 9.0]
    for seq, v in enumerate(vals):
        toks = np.full((2, 2, D), v, dtype=np.float32)
        toks[..., 0] = seq % 2  # break the exact collinearity a bit
        mem.append("s", [EncodedFrame(seq=seq, t=float(seq), tokens=toks)])
    st = mem.state("s")
    assert [(s.seq_lo, s.seq_hi) for s in st.slots][-2:] == [(3, 3), (4, 4)]
    check(mem, "s", 5)


def test_retries_and_out_of_order_appends(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=50, s_max=4, dim=D))
    assert mem.append("s", [frame(2, 4), frame(3, 4)]) == 0  # ahead of 0,1: waits
    assert mem.pending_seqs("s") == [2, 3]
    assert mem.state("s").slots == ()
    assert mem.append("s", [frame(0, 4)]) == 1
    assert mem.append("s", [frame(1, 4), frame(0, 4)]) == 4  # closes the gap, drains pending
    assert mem.pending_seqs("s") == []
    assert mem.append("s", [frame(2, 4), frame(3, 4)]) == 4  # retried: no-op
    check(mem, "s", 4)


def test_unknown_stream_and_bad_shapes(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    with pytest.raises(UnknownStream):
        mem.append("nope", [frame(0)])
    with pytest.raises(UnknownStream):
        mem.state("nope")
    mem.create("s", MemoryConfig(budget=50, s_max=4, dim=D))
    with pytest.raises(ValueError, match="do not fit"):
        mem.append("s", [EncodedFrame(0, 0.0, np.zeros((4, 4, D + 1), np.float32))])


def test_create_is_idempotent_and_delete_removes_everything(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    cfg = MemoryConfig(budget=50, s_max=4, dim=D)
    mem.create("s", cfg)
    mem.append("s", [frame(i, 4) for i in range(30)])
    assert mem.create("s", MemoryConfig(budget=99, s_max=4, dim=D)) == cfg
    assert mem.stored_bytes("s") > 0
    mem.delete("s")
    assert not mem.exists("s")
    assert fake_redis.keys("*") == []


def test_version_counts_every_write(fake_redis: redis.Redis) -> None:
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=50, s_max=4, dim=D))
    versions = []
    for i in range(5):
        mem.append("s", [frame(i, 4)])
        versions.append(mem.state("s").version)
    assert versions == [1, 2, 3, 4, 5]


def test_concurrent_writers_share_one_memory(fake_redis: redis.Redis) -> None:
    """Threads append interleaved, overlapping and repeated batches; the result is exact."""
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=60, s_max=4, dim=D))
    n = 120
    batches = [list(range(start, min(n, start + 6))) for start in range(0, n, 3)]  # each frame twice
    append_concurrently(lambda: mem, "s", batches, lambda q: frame(q, 4), workers=4)
    check(mem, "s", n)
    assert mem.pending_seqs("s") == []


def test_unknown_stream_is_a_vidmem_error_and_a_key_error() -> None:
    e = UnknownStream("cam")
    assert isinstance(e, VidmemError) and isinstance(e, KeyError)
    assert (e.code, e.status, str(e)) == ("unknown_stream", 404, "unknown stream 'cam'")


def test_a_read_retries_while_writers_commit_and_gives_up_after_max_attempts(
    fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = TokenMemory(fake_redis)
    mem.create("s", MemoryConfig(budget=50, s_max=4, dim=D))
    mem.append("s", [frame(0, 4)])
    read = TokenMemory._read_state
    calls: list[int] = []

    def racing(self: TokenMemory, pipe: object, sid: str, with_tokens: bool) -> MemoryState:
        calls.append(1)
        out = read(self, pipe, sid, with_tokens)
        if len(calls) == 1:
            raise memory._Stale  # a token blob a writer had just replaced
        if len(calls) <= 3:
            fake_redis.hincrby(mem.key(sid, "meta"), "version", 1)  # a writer commits before EXEC
        return out

    monkeypatch.setattr(TokenMemory, "_read_state", racing)
    assert mem.state("s", with_tokens=True).version == 3 and len(calls) == 4
    monkeypatch.setattr(memory, "MAX_ATTEMPTS", 2)
    calls[:] = [1]  # every try from now on loses to a writer
    with pytest.raises(MemoryBusy, match="2 tries") as busy:
        mem.state("s")
    assert len(calls) == 3
    assert (busy.value.code, busy.value.status, busy.value.retry_after_s) == ("store_unavailable", 503, 1)
