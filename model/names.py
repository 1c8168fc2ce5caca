"""The preset names and their families: plain tables, importable anywhere (no torch, no I/O)."""

from __future__ import annotations

PRESET_FAMILIES: dict[str, str] = {
    "tiny": "llava-ov",
    "random-0.5b": "llava-ov",
    "random-7b": "llava-ov",
    "random-llava-video-7b": "llava-ov",
    "tiny-qwen2.5-vl": "qwen2.5-vl",
    "random-qwen2.5-vl-7b": "qwen2.5-vl",
    "tiny-qwen3-vl": "qwen3-vl",
    "random-qwen3-vl-8b": "qwen3-vl",
    "tiny-dynamic-vlm": "dynamic-vlm",
    "random-dynamic-vlm-14b": "dynamic-vlm",
}
"""Every preset (``model.presets`` builds them, with torch) and its model family. ``tiny*`` are small
test checkpoints; ``random-*`` have the real models' sizes, with random weights, for benchmarks."""

PRESET_NAMES: tuple[str, ...] = tuple(PRESET_FAMILIES)

PRESET_DEFAULTS: dict[str, dict[str, int]] = {
    name: {"budget": 2048, "min_side": 1} for name in PRESET_NAMES if name.startswith("tiny")
}
"""Memory defaults that differ from the family's (``model.families``): the tiny test presets pool
down to side 1 within the CPU-sized budget, so tests exercise every side."""
