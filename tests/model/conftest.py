"""Fixtures for the model tests: the tiny LLaVA-OneVision preset, built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.backend import LoadConfig
from model.llava_ov import LlavaOVBackend
from model.presets import resolve_model


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("presets")


@pytest.fixture(scope="session")
def tiny_path(tiny_cache: Path) -> str:
    return resolve_model("tiny", tiny_cache)


@pytest.fixture(scope="session")
def tiny_backend(tiny_cache: Path, tiny_path: str) -> LlavaOVBackend:
    """The tiny preset on the CPU in fp32 (shared: tests must not modify it)."""
    return LlavaOVBackend(LoadConfig(model="tiny", cache_dir=tiny_cache, device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """[4, 384, 384, 3] uint8: smooth random colour fields (not pure noise)."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (4, 12, 12, 3)).astype(np.uint8)
    return np.repeat(np.repeat(small, 32, axis=1), 32, axis=2)
