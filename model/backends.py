"""Load the backend of any served family: the family is read from the checkpoint's config.json.

``--model`` takes a preset name, a local checkpoint directory or a hub id of any family; this is
the one place that maps a family to its backend class.
"""

from __future__ import annotations

from model.backend import Backend, LoadConfig
from model.families import family_of


def load_backend(config: LoadConfig) -> Backend:
    """The backend for ``config.model`` (a preset is built into ``config.cache_dir`` first)."""
    family = family_of(config.model)
    if family == "llava-ov":
        from model.llava_ov import LlavaOVBackend

        return LlavaOVBackend(config)
    if family == "qwen2.5-vl":
        from model.qwen2_5_vl import Qwen25VLBackend

        return Qwen25VLBackend(config)
    if family in ("qwen3-vl", "qwen3.5"):
        from model.qwen3_vl import Qwen3VLBackend

        return Qwen3VLBackend(config)
    if family == "dynamic-vlm":
        from model.dynamic_vlm import DynamicVLMBackend

        return DynamicVLMBackend(config)
    raise ValueError(f"model family {family!r} has no backend yet")
