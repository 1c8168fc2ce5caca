"""Property tests (hypothesis): the budget invariant and exactly-once frames over random appends."""

from __future__ import annotations

import fakeredis
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.compressor import plan_sides
from model.memory import TokenMemory
from model.slots import EncodedFrame, MemoryConfig, frames_in
from tests.writers import append_concurrently

D = 4


def frame(seq: int, cfg: MemoryConfig) -> EncodedFrame:
    """A frame whose timestamp text costs 1..cfg.text_tokens tokens (varying), or 0 without text."""
    s = cfg.s_max
    toks = np.random.default_rng(seq).standard_normal((s, s, D)).astype(np.float32)
    text = 1 + seq % cfg.text_tokens if cfg.text_tokens else 0
    return EncodedFrame(seq=seq, t=seq * 0.5, tokens=toks, text_tokens=text)


def assert_invariants(mem: TokenMemory, sid: str, delivered: set[int]) -> None:
    state = mem.state(sid, with_tokens=True)
    cfg = state.config
    assert state.tokens_used <= cfg.budget, (state.tokens_used, cfg.budget)
    covered = list(frames_in(state))
    assert covered == list(range(state.next_seq))  # no frame lost, none duplicated, in order
    # every delivered frame is either in memory or waiting for a predecessor
    assert delivered == set(covered) | set(mem.pending_seqs(sid))
    assert all(state.tokens[s.slot_id].shape == (s.side, s.side, D) for s in state.slots)
    planned = plan_sides([s.text for s in state.slots], cfg.budget, cfg.s_max, cfg.min_side)
    assert all(s.side <= p for s, p in zip(state.slots, planned, strict=True))
    assert all(a.t1 <= b.t0 for a, b in zip(state.slots, state.slots[1:], strict=False))


configs = st.builds(
    MemoryConfig,
    budget=st.integers(8, 120),
    s_max=st.integers(1, 6),
    dim=st.just(D),
    text_tokens=st.integers(0, 3),
    min_side=st.just(1),
    policy=st.sampled_from(["similar", "uniform"]),
    dtype=st.sampled_from(["float16", "float32"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    n=st.integers(1, 90),
    data=st.data(),
)
def test_random_append_sequences(cfg: MemoryConfig, n: int, data: st.DataObject) -> None:
    mem = TokenMemory(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    mem.create("s", cfg)
    delivered: set[int] = set()
    # random batches: out of order, overlapping, retried
    batches = data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=8), max_size=25))
    for batch in batches:
        mem.append("s", [frame(q, cfg) for q in batch])
        delivered |= set(batch)
        assert_invariants(mem, "s", delivered)
    # finally every frame arrives (at least once): the memory must hold exactly 0..n-1
    mem.append("s", [frame(q, cfg) for q in range(n)])
    delivered |= set(range(n))
    assert_invariants(mem, "s", delivered)
    assert mem.state("s").next_seq == n and mem.pending_seqs("s") == []


@settings(max_examples=15, deadline=None)
@given(cfg=configs, n=st.integers(10, 80), workers=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_concurrent_retried_appends(cfg: MemoryConfig, n: int, workers: int, seed: int) -> None:
    server = fakeredis.FakeServer()
    mem = TokenMemory(fakeredis.FakeRedis(server=server))
    mem.create("s", cfg)
    rng = np.random.default_rng(seed)
    chunks = [list(range(i, min(n, i + 5))) for i in range(0, n, 5)]
    plan = chunks + [chunks[i] for i in rng.integers(0, len(chunks), size=len(chunks) // 2)]  # retries
    rng.shuffle(plan)
    client = lambda: TokenMemory(fakeredis.FakeRedis(server=server))  # noqa: E731
    append_concurrently(client, "s", plan, lambda q: frame(q, cfg), workers)
    assert_invariants(mem, "s", set(range(n)))
    assert mem.state("s").next_seq == n
