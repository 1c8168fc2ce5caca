"""Qwen3-VL presets (filled in by the family backend)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

BUILDERS: dict[str, Callable[[str, Path], None]] = {}
