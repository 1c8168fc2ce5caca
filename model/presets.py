"""Preset checkpoints that need no download, of every family, built once into a cache.

A preset name (``model.names.PRESET_NAMES``) resolves to a local checkpoint directory, built once
with ``save_pretrained`` by its family's module (``presets_llava``, ``presets_qwen25``,
``presets_qwen3``, ``presets_dynamic``) and then loaded through the very same ``from_pretrained``
path as a hub id or any local checkpoint. Anything that is not a preset name resolves to itself.

This module knows nothing about frames, memory or prompts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from model.names import PRESET_NAMES

PRESET_VERSION = 2
"""Bumped whenever a preset's definition changes; a cached build of another version is rebuilt."""

MARKER = "vidmem_preset.json"

Builder = Callable[[str, Path], None]


def builders() -> dict[str, Builder]:
    """Every preset's build function, by name (each family's module lists its own)."""
    from model import presets_dynamic, presets_llava, presets_qwen3, presets_qwen25

    found = {
        **presets_llava.BUILDERS,
        **presets_qwen25.BUILDERS,
        **presets_qwen3.BUILDERS,
        **presets_dynamic.BUILDERS,
    }
    return {name: found[name] for name in PRESET_NAMES if name in found}


def build_preset(name: str, out_dir: Path) -> None:
    """Build preset ``name`` into ``out_dir`` (must not exist), with its version marker."""
    build = builders().get(name)
    if build is None:
        raise ValueError(f"no preset named {name!r}; presets: {', '.join(PRESET_NAMES)}")
    build(name, out_dir)
    (out_dir / MARKER).write_text(json.dumps({"preset": name, "version": PRESET_VERSION}))


def _is_current(path: Path) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("version") == PRESET_VERSION)


def resolve_model(name: str, cache_dir: Path) -> str:
    """A loadable checkpoint for ``name``: a hub id, a local path, or a preset name.

    A preset is built once into ``cache_dir/<name>`` (in a temporary directory renamed into
    place, so a reader never sees half a checkpoint, and concurrent builders do not clash)
    and its local path is returned. Anything else is returned unchanged.
    """
    if name not in PRESET_NAMES:
        return name
    final = Path(cache_dir) / name
    if _is_current(final):
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{name}.tmp-{uuid.uuid4().hex}"
    try:
        build_preset(name, tmp)
        if final.exists() and not _is_current(final):
            stale = final.parent / f".{name}.stale-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):  # another builder moved it first
                os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final):  # another builder won the race only if its build is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
