"""LlavaOVBackend on the tiny preset: shapes, batching, preprocessing, placement options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.backend import Backend, LoadConfig
from model.compressor import pool
from model.llava_ov import LlavaOVBackend, read_normalisation


def test_backend_shape_contract(tiny_backend: LlavaOVBackend, frames: np.ndarray) -> None:
    assert isinstance(tiny_backend, Backend)
    info = tiny_backend.info
    assert (info.s_max, info.dim, info.width, info.image_size) == (14, 64, 64, 384)
    assert (info.family, info.pool_space, info.positions, info.levels) == ("llava-ov", "llm", "1d", 1)
    assert info.fingerprint.startswith("llava-ov:") and len(info.fingerprint) == len("llava-ov:") + 12
    tokens = tiny_backend.encode(frames[:2])
    assert tokens.shape == (2, 14, 14, 64) and tokens.dtype == np.float32
    assert np.isfinite(tokens).all()
    assert tiny_backend.image_newline.shape == (64,) and tiny_backend.image_newline.dtype == np.float32
    assert tiny_backend.encode(frames[:0]).shape == (0, 14, 14, 64)


def test_encode_is_the_models_own_video_feature_path(
    tiny_backend: LlavaOVBackend, frames: np.ndarray
) -> None:
    """vision tower at vision_feature_layer -> projector -> apply_pooling, rebuilt by hand."""
    core = tiny_backend.model.model
    with torch.inference_mode():
        pixels = tiny_backend.preprocess(frames[:2])
        hidden = core.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        expected = core.apply_pooling(core.multi_modal_projector(hidden)).numpy().reshape(2, 14, 14, 64)
    np.testing.assert_array_equal(tiny_backend.encode(frames[:2]), expected)


def test_batching_does_not_change_tokens(tiny_cache: Path, tiny_path: str) -> None:
    rng = np.random.default_rng(3)
    ten = rng.integers(0, 256, (10, 384, 384, 3), dtype=np.uint8)
    small = LlavaOVBackend(LoadConfig(model="tiny", cache_dir=tiny_cache, device="cpu", max_batch=3))
    big = LlavaOVBackend(LoadConfig(model="tiny", cache_dir=tiny_cache, device="cpu", max_batch=16))
    np.testing.assert_allclose(small.encode(ten), big.encode(ten), rtol=0, atol=1e-6)


def test_preprocess_normalises_and_resizes(tiny_backend: LlavaOVBackend) -> None:
    flat = np.full((1, 384, 384, 3), 255, np.uint8)
    flat[..., 1] = 0
    px = tiny_backend.preprocess(flat)
    assert px.shape == (1, 3, 384, 384) and px.dtype == torch.float32
    assert torch.allclose(px[0, :, 0, 0], torch.tensor([1.0, -1.0, 1.0]))
    other = np.full((2, 240, 320, 3), 255, np.uint8)
    other[..., 1] = 0
    resized = tiny_backend.preprocess(other)
    assert resized.shape == (2, 3, 384, 384)
    assert torch.allclose(resized, px.expand(2, -1, -1, -1))
    assert tiny_backend.encode(other).shape == (2, 14, 14, 64)
    with pytest.raises(ValueError, match="uint8"):
        tiny_backend.encode(np.zeros((1, 384, 384, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        tiny_backend.encode(np.zeros((384, 384, 3), np.uint8))


def test_normalisation_is_read_from_the_checkpoint(tmp_path: Path, tiny_path: str) -> None:
    assert read_normalisation(tiny_path).mean == (0.5, 0.5, 0.5)
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [1, 2, 3], "rescale_factor": 0.5})
    )
    norm = read_normalisation(str(tmp_path))
    assert (norm.mean, norm.std, norm.rescale) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0), 0.5)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_normalisation(str(empty)).std == (0.5, 0.5, 0.5)


def test_pool_and_llm_embeds(tiny_backend: LlavaOVBackend, frames: np.ndarray) -> None:
    tokens = tiny_backend.encode(frames[:1])
    np.testing.assert_array_equal(tiny_backend.pool(tokens, 7), pool(tokens, 7))
    flat = tokens.reshape(-1, 64)
    assert torch.equal(tiny_backend.to_llm_embeds(flat), torch.from_numpy(flat))
    with pytest.raises(ValueError, match="width"):
        tiny_backend.to_llm_embeds(np.zeros((3, 32), np.float32))


def test_bf16_on_cpu(tiny_cache: Path, tiny_path: str, frames: np.ndarray) -> None:
    cfg = LoadConfig(model="tiny", cache_dir=tiny_cache, device="cpu", dtype="bfloat16")
    backend = LlavaOVBackend(cfg)
    assert backend.dtype == torch.bfloat16
    tokens = backend.encode(frames[:2])
    assert tokens.dtype == np.float32 and tokens.shape == (2, 14, 14, 64) and np.isfinite(tokens).all()


def test_config_defaults_and_validation() -> None:
    cfg = LoadConfig()
    assert (
        cfg.model == "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
        and cfg.max_batch == 8
        and cfg.dtype == "auto"
    )
    with pytest.raises(ValueError):
        LoadConfig(max_batch=0)
