"""Families without torch: detection from config.json, frame sides, defaults, start-up checks, fingerprints;
and the memory's backend rule (legacy memories are LLaVA-OV's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.families import (
    DEFAULTS,
    defaults_for,
    family_of,
    family_of_config,
    fingerprint,
    frame_side,
    model_problem,
)
from model.names import PRESET_FAMILIES, PRESET_NAMES
from model.slots import BackendMismatch, MemoryConfig


def _checkpoint(root: Path, config: dict[str, object]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    return str(root)


def test_every_preset_has_a_family_with_defaults() -> None:
    assert set(PRESET_NAMES) == set(PRESET_FAMILIES)
    for name in PRESET_NAMES:
        d = defaults_for(name)
        assert PRESET_FAMILIES[name] in DEFAULTS and d.budget >= 16 and d.text_tokens > 0
        assert (d.min_side == 1) == name.startswith("tiny")


def test_families_from_config() -> None:
    assert family_of_config({"model_type": "llava_onevision"}) == "llava-ov"
    assert family_of_config({"model_type": "qwen2_5_vl"}) == "qwen2.5-vl"
    assert family_of_config({"model_type": "qwen3_vl"}) == "qwen3-vl"
    assert family_of_config({"model_type": "qwen3_5"}) == "qwen3.5"
    llava = {"model_type": "qwen2", "mm_projector_type": "mlp2x_gelu"}
    assert family_of_config(llava | {"mm_vision_tower": "openai/clip-vit-large-patch14-336"}) == "dynamic-vlm"
    siglip_config = {"model_type": "siglip_vision_model"}
    for siglip in (
        {"mm_vision_tower": "google/siglip-so400m-patch14-384"},
        {"mm_vision_tower": "/x/tower", "vision_config": siglip_config},
    ):
        with pytest.raises(ValueError, match="not served"):
            family_of_config(llava | siglip)  # an original LLaVA-OV/LLaVA-Video checkpoint is not Dynamic-VLM
    with pytest.raises(ValueError, match="'bert' is not served"):
        family_of_config({"model_type": "bert"})


def test_frame_sides(tmp_path: Path) -> None:
    assert [frame_side(n) for n in ("tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-dynamic-vlm")] == [
        384, 448, 512, 336
    ]  # fmt: skip
    patches = {"patch_size": 14, "spatial_merge_size": 2}
    qwen = _checkpoint(tmp_path / "q", {"model_type": "qwen2_5_vl", "vision_config": patches})
    llava = _checkpoint(
        tmp_path / "l", {"model_type": "llava_onevision", "vision_config": {"image_size": 224}}
    )
    assert (frame_side(qwen), frame_side(llava), family_of(llava)) == (448, 224, "llava-ov")


def test_start_up_checks(tmp_path: Path) -> None:
    assert model_problem("tiny-qwen3-vl") is None
    assert "cannot be 0" in (model_problem("tiny-qwen3-vl", text_tokens=0) or "")
    assert model_problem("tiny", text_tokens=0) is None  # LLaVA-OV slots need no label
    qwen = _checkpoint(tmp_path / "q", {"model_type": "qwen3_vl"})
    assert model_problem(qwen) is None and "cannot be 0" in (model_problem(qwen, 0) or "")


def test_fingerprints_ignore_volatile_keys_at_any_depth(tmp_path: Path) -> None:
    base = {"model_type": "qwen3_vl", "text_config": {"hidden_size": 64, "dtype": "float32"}}
    a = _checkpoint(tmp_path / "a", base | {"dtype": "float32", "transformers_version": "5.25.0"})
    b = _checkpoint(tmp_path / "b", base | {"text_config": {"hidden_size": 64, "dtype": "bfloat16"}})
    c = _checkpoint(tmp_path / "c", base | {"text_config": {"hidden_size": 128}})
    assert fingerprint("qwen3-vl", a) == fingerprint("qwen3-vl", b) != fingerprint("qwen3-vl", c)
    assert fingerprint("qwen3-vl", a).startswith("qwen3-vl:")


def test_a_memory_is_read_only_by_the_model_that_wrote_it() -> None:
    cfg = MemoryConfig(budget=64, s_max=4, dim=8, text_tokens=2, backend="qwen3-vl:0123456789ab")
    cfg.require_backend("qwen3-vl:0123456789ab", 8)
    with pytest.raises(BackendMismatch, match="qwen3-vl:0123456789ab"):
        cfg.require_backend("qwen3-vl:ffffffffffff", 8)
    legacy = MemoryConfig(budget=64, s_max=4, dim=8, text_tokens=2)  # written before fingerprints
    legacy.require_backend("llava-ov:0123456789ab", 8)
    for other, dim in (("qwen2.5-vl:0123456789ab", 8), ("llava-ov:0123456789ab", 16)):
        with pytest.raises(BackendMismatch, match="before model fingerprints"):
            legacy.require_backend(other, dim)
    assert np.isfinite(cfg.max_slots)
