"""The memory's transactions against a real redis-server: concurrent, retried, out-of-order writers."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from model.memory import MemoryConfig, TokenMemory, frames_in
from model.slots import EncodedFrame
from tests.conftest import RedisServer
from tests.writers import append_concurrently

pytestmark = pytest.mark.integration

D = 16


def frame(seq: int, s: int, text: int = 2) -> EncodedFrame:
    toks = np.random.default_rng(seq).standard_normal((s, s, D)).astype(np.float32)
    return EncodedFrame(seq=seq, t=float(seq), tokens=toks, thumb=b"t", text_tokens=text)


@pytest.mark.parametrize("seed", range(6))  # races show up in some interleavings only
@pytest.mark.parametrize("policy", ["similar", "uniform"])
def test_concurrent_writers_on_real_redis(
    redis_server: RedisServer, real_redis: redis.Redis, policy: str, seed: int
) -> None:
    cfg = MemoryConfig(budget=120, s_max=6, dim=D, text_tokens=2, policy=policy)
    TokenMemory(real_redis).create("cam", cfg)
    n, workers = 400, 6
    chunks = [list(range(i, min(n, i + 7))) for i in range(0, n, 7)]
    rng = np.random.default_rng(seed)
    plan = chunks + [
        chunks[i] for i in rng.integers(0, len(chunks), size=len(chunks))
    ]  # every chunk retried ~once
    rng.shuffle(plan)
    client = lambda: TokenMemory(redis.Redis.from_url(redis_server.url))  # noqa: E731  one connection each
    append_concurrently(client, "cam", plan, lambda q: frame(q, cfg.s_max), workers)
    mem = TokenMemory(real_redis)
    state = mem.state("cam", with_tokens=True)
    assert list(frames_in(state)) == list(range(n))  # none lost, none duplicated
    assert state.tokens_used <= cfg.budget
    assert len(state.slots) == cfg.budget // (1 + 2)  # side 1 + 2 text tokens per slot, full
    assert mem.pending_seqs("cam") == []
    # bounded storage: tokens + thumbnails + metadata stay near budget x D x bytes
    assert mem.stored_bytes("cam") < cfg.budget * D * 2 + 200 * len(state.slots) + 4096
