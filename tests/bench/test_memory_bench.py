"""``bench memory``'s own pieces, in process: its options, its targets, and the label share it reports."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import redis

from bench import memory as bench_memory
from bench.history import Seeds, build_history, label_share
from core.settings import Settings
from workers.pipeline import thumbnail
from workers.runtime import Runtime


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench_memory.add_arguments(p)
    return p.parse_args(list(argv))


def test_defaults_are_auto_dtype_and_the_models_memory_settings() -> None:
    args = _parse()
    got = (args.size, args.model, args.dtype, args.budget, args.min_side)
    assert got == ("tiny", None, "auto", None, None)
    args = _parse("--size", "real", "--model", "tiny-qwen3-vl", "--budget", "512", "--min-side", "2")
    assert (args.model, args.budget, args.min_side) == ("tiny-qwen3-vl", 512, 2)
    assert all(not hasattr(spec, "dtype") for spec in bench_memory.SIZES.values())  # no size forces a dtype


def test_label_share_targets_apply_to_real_sizes_only() -> None:
    result = {"size": "tiny", "label_share_24h": 0.9}
    targets = bench_memory._targets(result)
    want = {"target": "<= 0.25", "value": 0.9, "met": None, "applies_to": ["real"]}
    assert targets["label_share_24h"] == want
    targets = bench_memory._targets(result | {"size": "real", "label_share_1h": 0.2})
    assert targets["label_share_24h"]["met"] is False and targets["label_share_1h"]["met"] is True


@pytest.mark.slow
def test_label_share_is_slot_text_over_the_budget(tmp_path: Path, fake_redis: redis.Redis) -> None:
    """Labels over the budget, as the answer worker's prompt has them and as the memory accounted them."""
    rt = Runtime.create(Settings(model="tiny", model_cache=tmp_path, dtype="auto"), client=fake_redis)
    backend, budget = rt.backend(), rt.memory_defaults().budget
    cfg = rt.memory_config(budget)
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((2, cfg.s_max, cfg.s_max, cfg.dim)).astype(np.float32)
    thumb = thumbnail(np.zeros((32, 32, 3), np.uint8))
    build_history(backend, rt.memory, "s", cfg, Seeds(tokens, [thumb, thumb]), 600)
    out = label_share(backend, rt.memory, "s", "What happens?")
    assert out["label_tokens"] == out["accounted_label_tokens"] > 0
    assert out["label_share"] == out["label_tokens"] / budget
    used = out["label_tokens"] + out["visual_tokens"]
    assert used <= budget
    assert out["label_share_of_used"] == out["label_tokens"] / used
