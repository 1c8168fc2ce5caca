"""The Dynamic-VLM checkpoint layout (``Hon-Wong/ByteVideoLLM-14B``, LLaVA-style): read, split, load strictly.

A checkpoint is a directory (or a hub id already in the local hub cache) holding:

* ``config.json``: a Qwen2 config (``model_type`` "qwen2") plus LLaVA's keys: ``mm_vision_tower`` (e.g.
  "openai/clip-vit-large-patch14-336"), ``mm_hidden_size`` (1024), ``mm_projector_type`` ("mlp2x_gelu"),
  ``mm_vision_select_layer`` (-2), optionally ``mm_vision_select_feature`` ("patch": CLS dropped) and
  ``vision_config`` (a ``CLIPVisionConfig`` dict, for a tower other than CLIP ViT-L/14-336);
* ``model.safetensors``, or shards with ``model.safetensors.index.json``;
* tokenizer files (the released checkpoint ships none: put Qwen2.5-14B-Instruct's there);
* optionally ``preprocessor_config.json`` (``image_mean``/``image_std``; CLIP's when absent).

The weights are one flat key space, split into three parts by ``PREFIXES`` (the longest prefix that a
key starts with wins), and each part is loaded into its module with ``load_state_dict(strict=True)``
after a check that names every missing and unexpected key (``CheckpointError``). The real key names of
ByteVideoLLM-14B could not be read here (no network): ``PREFIXES`` follows LLaVA's convention, which
ByteVideoLLM derives from (``LlavaQwenForCausalLM``: the Qwen2 model as ``model.*`` with
``model.vision_tower.vision_tower`` = a ``CLIPVisionModel`` and ``model.mm_projector`` = an
``nn.Sequential``), and it is the one place to change if the real names differ.

LLaVA does not always save the vision tower (it loads it from ``mm_vision_tower``): a checkpoint with
no key under the vision prefix takes the tower from ``mm_vision_tower`` (a local directory or a hub id
in the local cache, e.g. openai's CLIP checkpoint), again strictly.

This module knows nothing about frames, prompts or memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from huggingface_hub import snapshot_download
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.initialization import no_init_weights

PREFIXES: dict[str, str] = {
    "model.vision_tower.vision_tower.vision_model.": "vision",
    "model.mm_projector.": "projector",
    "": "llm",
}
"""Checkpoint key prefix -> part; the prefix is stripped. ``vision``: a ``CLIPVisionModel`` (keys
``embeddings.*``, ``pre_layrnorm.*``, ``encoder.layers.*``, ``post_layernorm.*``); ``projector``: the
MLP (``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``); ``llm``: a ``Qwen2ForCausalLM`` (``model.*``,
``lm_head.weight``). LLaVA's convention; the one place to change for other key names."""

IGNORED_SUFFIXES = ("position_ids", "rotary_emb.inv_freq")
"""Buffers that older transformers saved and the current classes recompute: dropped, not loaded."""

LLAVA_KEYS = frozenset(
    {
        "mm_vision_tower",
        "mm_hidden_size",
        "mm_projector_type",
        "mm_vision_select_layer",
        "mm_vision_select_feature",
        "vision_config",
    }
)

CLIP_L_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}
"""``openai/clip-vit-large-patch14-336``'s vision tower, the default when config.json has no vision_config."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's pixel normalisation, used when a checkpoint has no preprocessor_config.json."""
PLACEHOLDER = "<image>"
"""What a Dynamic-VLM chat template renders for a video item (LLaVA's image token, as in the paper)."""

PROJECTOR_TYPE = "mlp2x_gelu"
SELECT_FEATURE = "patch"


class CheckpointError(ValueError):
    """A checkpoint does not fit the Dynamic-VLM layout (names the keys or files at fault)."""


@dataclass(frozen=True, slots=True)
class DynamicConfig:
    """What config.json says about the three parts."""

    text: Qwen2Config
    vision: CLIPVisionConfig
    """The tower's config (CLIP-L/336 by default); a tower taken from ``vision_tower`` brings its own."""
    vision_tower: str
    mm_hidden_size: int
    select_layer: int
    """Index into the tower's ``hidden_states``: the embeddings, then each layer; -2 is the penultimate."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DynamicConfig:
        missing = [k for k in ("mm_vision_tower", "mm_hidden_size", "mm_projector_type") if k not in raw]
        if missing:
            raise CheckpointError(f"config.json lacks LLaVA's keys {missing}: not a Dynamic-VLM checkpoint")
        if raw["mm_projector_type"] != PROJECTOR_TYPE:
            raise CheckpointError(f"mm_projector_type {raw['mm_projector_type']!r}: only {PROJECTOR_TYPE!r}")
        feature = raw.get("mm_vision_select_feature", SELECT_FEATURE)
        if feature != SELECT_FEATURE:
            raise CheckpointError(
                f"mm_vision_select_feature {feature!r}: only {SELECT_FEATURE!r} (CLS dropped)"
            )
        if raw.get("mm_use_im_start_end", False):
            raise CheckpointError(
                "mm_use_im_start_end is set: the prompt has no <im_start>/<im_end> around frames"
            )
        text = {k: v for k, v in raw.items() if k not in LLAVA_KEYS and k != "architectures"}
        vision = {**CLIP_L_336, **raw.get("vision_config", {})}
        vision.pop("model_type", None)
        return cls(
            text=Qwen2Config(**{**text, "model_type": "qwen2"}),
            vision=CLIPVisionConfig(**vision),
            vision_tower=str(raw["mm_vision_tower"]),
            mm_hidden_size=int(raw["mm_hidden_size"]),
            select_layer=int(raw.get("mm_vision_select_layer", -2)),
        )


@dataclass(frozen=True, slots=True, eq=False)
class DynamicParts:
    """A loaded checkpoint: vision tower, projector ``[*, mm_hidden] -> [*, llm_hidden]``, LLM."""

    config: DynamicConfig
    vision: CLIPVisionModel
    projector: nn.Sequential
    lm: Qwen2ForCausalLM


def local_dir(name: str) -> Path:
    """A checkpoint directory for a local path or a hub id in the local cache (never downloads)."""
    path = Path(name)
    if path.is_dir():
        return path
    return Path(snapshot_download(name, local_files_only=True))


def read_config(path: Path) -> DynamicConfig:
    return DynamicConfig.from_dict(json.loads((path / "config.json").read_text()))


def make_projector(mm_hidden: int, hidden: int) -> nn.Sequential:
    """LLaVA's ``mlp2x_gelu``: Linear(mm_hidden -> hidden), GELU, Linear(hidden -> hidden)."""
    return nn.Sequential(nn.Linear(mm_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the index's shards, else ``model.safetensors``."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{path}: neither model.safetensors nor model.safetensors.index.json")


def prefix_of(part: str) -> str:
    """The key prefix of a part (``PREFIXES`` inverted): what a checkpoint writer puts before its keys."""
    return next(p for p, name in PREFIXES.items() if name == part)


def part_of(key: str) -> tuple[str, str]:
    """(part, key without its prefix) by the longest prefix of ``PREFIXES`` that ``key`` starts with."""
    prefix = max((p for p in PREFIXES if key.startswith(p)), key=len)
    return PREFIXES[prefix], key[len(prefix) :]


def read_parts(path: Path, dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor of the checkpoint (in ``dtype``, on the CPU), split into parts by ``PREFIXES``."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in PREFIXES.values()}
    for file in weight_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.endswith(IGNORED_SUFFIXES):
                    continue
                part, name = part_of(key)
                if name in parts[part]:
                    raise CheckpointError(f"key {key} is in more than one weight file of {path}")
                parts[part][name] = f.get_tensor(key).to(dtype)
    return parts


def _named(keys: Iterable[str], part: str) -> str:
    listed = sorted(prefix_of(part) + k for k in keys)
    more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
    return ", ".join(listed[:20]) + more


def load_part(module: nn.Module, state: dict[str, torch.Tensor], part: str, assign: bool) -> None:
    """``module.load_state_dict(state, strict=True)``, after a check that names any key at fault."""
    want = set(module.state_dict())
    missing, unexpected = want - set(state), set(state) - want
    if missing or unexpected:
        raise CheckpointError(
            f"the {part} part of the checkpoint does not match its module: "
            f"missing keys [{_named(missing, part)}]; unexpected keys [{_named(unexpected, part)}]"
        )
    module.load_state_dict(state, strict=True, assign=assign)


def _empty(cls: Any, config: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """A module of ``cls`` with uninitialised weights (they are all loaded next); buffers computed."""
    with no_init_weights(), torch.device(device):
        return cls._from_config(config, dtype=dtype).eval()


def _tower_from_hub(cfg: DynamicConfig, device: torch.device, dtype: torch.dtype) -> CLIPVisionModel:
    """The tower from ``mm_vision_tower`` (LLaVA's delay_load): strict, local files only."""
    try:
        loaded: Any = CLIPVisionModel.from_pretrained(
            cfg.vision_tower, dtype=dtype, local_files_only=True, output_loading_info=True
        )
    except OSError as exc:
        raise CheckpointError(
            f"the checkpoint holds no vision tower weights and mm_vision_tower {cfg.vision_tower!r} "
            f"is not available locally ({exc}); download it first: hf download {cfg.vision_tower}"
        ) from exc
    tower, info = loaded
    if info["missing_keys"] or info["mismatched_keys"]:
        raise CheckpointError(
            f"vision tower {cfg.vision_tower!r}: missing keys {sorted(info['missing_keys'])}"
        )
    return cast(CLIPVisionModel, tower.to(device).eval())


def geometry(vision: CLIPVisionConfig) -> tuple[int, int]:
    """(image_size, patch_size) of a square tower: frames are image_size^2 px; grid side = their ratio."""
    size, patch = vision.image_size, vision.patch_size
    if not isinstance(size, int) or not isinstance(patch, int):
        raise CheckpointError(
            f"vision tower image_size {size!r} / patch_size {patch!r}: only square, as ints"
        )
    return size, patch


def load_checkpoint(name: str, device: torch.device, dtype: torch.dtype) -> DynamicParts:
    """Load the three parts of checkpoint ``name`` onto ``device`` in ``dtype``; CheckpointError on any
    missing or unexpected key. The LLM's tied ``lm_head`` may be absent (then it is the embedding)."""
    path = local_dir(name)
    cfg = read_config(path)
    parts = read_parts(path, dtype)
    assign = device.type == "cpu"  # keep the loaded tensors: no second copy of the weights in RAM
    if parts["vision"]:
        vision = _empty(CLIPVisionModel, cfg.vision, device, dtype)
        load_part(vision, parts.pop("vision"), "vision", assign)
    else:
        vision = _tower_from_hub(cfg, device, dtype)
    width = int(vision.config.hidden_size)
    if width != cfg.mm_hidden_size:
        raise CheckpointError(f"mm_hidden_size {cfg.mm_hidden_size} but the vision tower is {width} wide")
    cfg = DynamicConfig(cfg.text, vision.config, cfg.vision_tower, cfg.mm_hidden_size, cfg.select_layer)
    with torch.device(device):
        projector = make_projector(width, cfg.text.hidden_size).to(dtype).eval()
    load_part(projector, parts.pop("projector"), "projector", assign)
    lm = _empty(Qwen2ForCausalLM, cfg.text, device, dtype)
    state = parts.pop("llm")
    if (
        cfg.text.tie_word_embeddings
        and "lm_head.weight" not in state
        and "model.embed_tokens.weight" in state
    ):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    load_part(lm, state, "llm", assign)
    if cfg.text.tie_word_embeddings:
        lm.tie_weights()
    if (path / "generation_config.json").is_file():
        lm.generation_config = GenerationConfig.from_pretrained(str(path))
    return DynamicParts(cfg, vision, projector, lm)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer; a clear error when it ships none (the released checkpoint does not)."""
    path = local_dir(name)
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(
            f"{path} has no tokenizer files: put Qwen2.5-14B-Instruct's tokenizer files (tokenizer.json, "
            "tokenizer_config.json, vocab.json, merges.txt) into the checkpoint directory"
        )
    return AutoTokenizer.from_pretrained(str(path))


def write_index(out_dir: Path, weight_map: dict[str, str], total_size: int) -> None:
    """``model.safetensors.index.json`` for shards written one by one."""
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
