"""Which model family a checkpoint belongs to, whether it can load here, and the family's memory
defaults, without torch and without the network.

The API process (``vidmem serve``) creates streams with the model's default budget but never loads
the model, so the family is read here from the checkpoint's ``config.json`` alone: a preset (by
name), a local directory, or a hub id already in the local hub cache.

Defaults keep the memory in the range each model saw in training (``min_side``: the smallest grid
side a slot is pooled to before slots merge in time). The tiny test presets differ
(``model.names.PRESET_DEFAULTS``): their floor is 1, so tests exercise pooling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError

from model.names import PRESET_DEFAULTS, PRESET_FAMILIES, PRESET_NAMES


@dataclass(frozen=True, slots=True)
class Defaults:
    """A family's memory defaults (``Settings`` fields left unset take these)."""

    budget: int
    min_side: int
    text_tokens: int
    """The most prompt tokens one slot's time label (with its per-slot markers) may take."""


DEFAULTS: dict[str, Defaults] = {
    # LLaVA-OV/LLaVA-Video were trained on 14x14 pooled video frames only: below that, slots merge.
    "llava-ov": Defaults(budget=4096, min_side=14, text_tokens=8),
    # qwen-vl-utils' VIDEO_MIN_PIXELS: 128 merged tokens per frame (side 11) at the least.
    "qwen2.5-vl": Defaults(budget=12288, min_side=11, text_tokens=12),
    "qwen3-vl": Defaults(budget=12288, min_side=11, text_tokens=12),
    "qwen3.5": Defaults(budget=12288, min_side=11, text_tokens=12),
    # The paper trained with 16..576 tokens per frame (sides 4..24); its 14B model used a 10K budget. Floor
    # 6 (36 tokens, 58.7 on VideoMME in its ablation against 60.9 at 100) keeps the "86399s: " + "; " label
    # (10 tokens with Qwen's digit-by-digit numbers) under a quarter of the budget; floor 4 would give it 38%.
    "dynamic-vlm": Defaults(budget=10240, min_side=6, text_tokens=10),
}


QWEN_SLOT_SIDE = 16
"""The Qwen backends encode every frame as one 16×16 grid of merged tokens: a square of 16 × patch ×
merge pixels (448 for Qwen2.5-VL's 14-px patches, 512 for Qwen3-VL's 16-px ones)."""

FRAME_SIDE = {"llava-ov": 384, "qwen2.5-vl": 448, "qwen3-vl": 512, "qwen3.5": 512, "dynamic-vlm": 336}
"""Each family's frame side in pixels when its checkpoint does not say (every preset is at it)."""


def family_of_config(config: dict[str, Any]) -> str:
    """The family of a checkpoint from its ``config.json``; ValueError for one vidmem cannot serve."""
    model_type = config.get("model_type")
    if model_type == "llava_onevision":
        return "llava-ov"
    if model_type == "qwen2_5_vl":
        return "qwen2.5-vl"
    if model_type == "qwen3_vl":
        return "qwen3-vl"
    if model_type == "qwen3_5":  # Qwen3-VL's vision tower and prompt scheme, without DeepStack
        return "qwen3.5"
    if "mm_projector_type" in config and _clip_tower(config):
        return "dynamic-vlm"
    raise ValueError(
        f"model_type {model_type!r} is not served: vidmem serves LLaVA-OneVision/LLaVA-Video, Qwen2.5-VL, "
        "Qwen3-VL, Qwen3.5 and Dynamic-VLM (a LLaVA-style config with mm_vision_tower and mm_projector_type)"
    )


def _clip_tower(config: dict[str, Any]) -> bool:
    """A LLaVA-style config with a CLIP tower (Dynamic-VLM's): not the SigLIP of the original
    LLaVA-OV/LLaVA-Video checkpoints (whose hf ports have ``model_type`` llava_onevision instead)."""
    tower = config.get("mm_vision_tower")
    vision = config.get("vision_config")
    if not tower or "siglip" in str(tower).lower():
        return False
    return not isinstance(vision, dict) or vision.get("model_type") in (None, "clip_vision_model")


def frame_side(name: str) -> int:
    """The square side, in pixels, that checkpoint ``name`` encodes frames at (decoders resize to it once):
    the vision config's ``image_size`` (LLaVA-OV, Dynamic-VLM), or 16 merged tokens of patches (Qwen)."""
    family = family_of(name)
    raw = None if name in PRESET_FAMILIES else read_checkpoint_file(name, "config.json")
    vision = json.loads(raw).get("vision_config") if raw else None
    if not isinstance(vision, dict):
        return FRAME_SIDE[family]
    if family in ("llava-ov", "dynamic-vlm"):
        return int(vision.get("image_size", FRAME_SIDE[family]))
    return QWEN_SLOT_SIDE * int(vision.get("patch_size", 16)) * int(vision.get("spatial_merge_size", 2))


def read_checkpoint_file(name: str, filename: str) -> str | None:
    """A file of a local checkpoint directory or of a hub id in the local cache; None when absent."""
    path = Path(name)
    if path.is_dir():
        found = path / filename
        return found.read_text() if found.is_file() else None
    try:
        cached = try_to_load_from_cache(name, filename)
    except HFValidationError:
        return None
    return Path(cached).read_text() if isinstance(cached, str) else None


def family_of(name: str) -> str:
    """The family of a preset name, a local checkpoint, or a cached hub id (ValueError if unknown)."""
    if name in PRESET_FAMILIES:
        return PRESET_FAMILIES[name]
    raw = read_checkpoint_file(name, "config.json")
    if raw is None:
        raise ValueError(f"model {name!r}: no config.json found locally")
    return family_of_config(json.loads(raw))


def defaults_for(name: str) -> Defaults:
    """The memory defaults of checkpoint ``name``: its family's (a tiny preset's differ)."""
    base = DEFAULTS[family_of(name)]
    override = PRESET_DEFAULTS.get(name, {})
    return Defaults(
        budget=override.get("budget", base.budget),
        min_side=override.get("min_side", base.min_side),
        text_tokens=override.get("text_tokens", base.text_tokens),
    )


VOLATILE_KEYS = frozenset({"transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures"})
"""Config keys that do not change what a checkpoint's tokens mean (left out of its fingerprint, at any
depth)."""


def _stable(value: Any) -> Any:
    """``value`` without ``VOLATILE_KEYS`` in any nested dict."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def fingerprint(family: str, checkpoint: str) -> str:
    """``family:<12 hex>``: a hash of the checkpoint's config.json without its volatile keys. Two
    checkpoints with one architecture and one config share it (fine-tunes of one base model do too:
    their tokens live in the same spaces, though their meaning may drift)."""
    import hashlib

    raw = read_checkpoint_file(checkpoint, "config.json")
    if raw is None:
        raise ValueError(f"model {checkpoint!r}: no config.json found locally")
    digest = hashlib.sha256(json.dumps(_stable(json.loads(raw)), sort_keys=True).encode()).hexdigest()
    return f"{family}:{digest[:12]}"


MARKED = frozenset({"qwen2.5-vl", "qwen3-vl", "qwen3.5"})
"""Families that write vision markers around every slot: their slots always need label tokens."""


def model_problem(name: str, text_tokens: int | None = None) -> str | None:
    """None when ``name`` can be loaded here without a download and is of a served family; else one line
    that says why not and what to do. A name is a preset, a local checkpoint directory (with a
    ``config.json``), or a hub id whose files are already in the local hub cache (``HF_HOME``). The API
    process runs this check too, before anything starts."""
    if text_tokens == 0 and name in PRESET_FAMILIES and PRESET_FAMILIES[name] in MARKED:
        return f"model {name!r} writes vision markers around every slot: VIDMEM_TEXT_TOKENS cannot be 0"
    if name in PRESET_NAMES:
        return None
    path = Path(name)
    if path.exists() and not path.is_dir():
        return f"model {name!r} is a file; give a checkpoint directory, a hub id or a preset"
    raw = read_checkpoint_file(name, "config.json")
    if raw is None and path.is_dir():
        return f"model {name!r} is a directory without a config.json: not a checkpoint"
    if raw is None:
        return (
            f"model {name!r} is not a preset ({', '.join(PRESET_NAMES)}), a checkpoint directory, or a hub "
            "id in the local Hugging Face cache; a hub id needs its weights downloaded first: "
            f"hf download {name}"
        )
    try:
        family = family_of_config(json.loads(raw))
    except ValueError as e:
        return f"model {name!r}: {e}"
    if text_tokens == 0 and family in MARKED:
        return f"model {name!r} writes vision markers around every slot: VIDMEM_TEXT_TOKENS cannot be 0"
    return None
