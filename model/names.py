"""Whether a model name can be loaded here without a download, checked before anything starts.

A name is a preset (built locally, ``model.presets``), a local checkpoint directory (with a
``config.json``), or a Hugging Face hub id whose files are already in the local hub cache (``HF_HOME``).
Nothing here touches the network, and nothing imports torch: the API process (``vidmem serve``) runs
this check too. Knows nothing about how a checkpoint is loaded.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError

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


def model_problem(name: str) -> str | None:
    """None when ``name`` can be loaded without a download; else one line that says why not and what to do."""
    if name in PRESET_NAMES:
        return None
    path = Path(name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return f"model {name!r} is a directory without a config.json: not a checkpoint"
    if path.exists():
        return f"model {name!r} is a file; give a checkpoint directory, a hub id or a preset"
    if _in_hub_cache(name):
        return None
    return (
        f"model {name!r} is not a preset ({', '.join(PRESET_NAMES)}), a checkpoint directory, or a hub id "
        f"in the local Hugging Face cache; a hub id needs its weights downloaded first: hf download {name}"
    )


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds ``repo_id``'s config.json (its main revision). False for text that
    cannot be a hub id (``./x/y``, ``a/b/c``)."""
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        return False
    return isinstance(found, str)
