"""Saving a preset checkpoint: what every family's preset module writes the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, extra: dict[str, Any]
) -> None:
    """Save a preset: greedy generation ending at ``<|im_end|>``/``<|endoftext|>``, the model, the
    tokenizer, and ``extra`` (file name -> JSON value) into ``out_dir`` (must not exist)."""
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for name, value in extra.items():
        (out_dir / name).write_text(json.dumps(value, indent=2))


@dataclass(frozen=True, slots=True)
class PresetSpec:
    """Architecture of one preset: a vision config and a text (LLM) config, as in the hub configs."""

    vision: dict[str, Any]
    text: dict[str, Any]
    vocab_size: int | None  # None: the tokenizer's size
    tie_embeddings: bool
    save_dtype: torch.dtype
    lm_scale: float = 1.0
    """Factor on the LLM's decoder matrices after the library's init (std 0.02). At tiny widths the
    residual branches are then negligible and greedy decoding repeats the last prompt token; a larger
    scale gives varied answers (useful for streaming tests and demos)."""
    seed: int = 0


def random_model(cls: Any, config: Any, spec: PresetSpec) -> PreTrainedModel:
    """``cls`` with seeded random weights, built directly in the saved dtype (a 7B model in fp32 would
    need 30+ GB of RAM), its LLM's decoder matrices scaled by ``spec.lm_scale``."""
    torch.manual_seed(spec.seed)
    model: PreTrainedModel = cls._from_config(config, dtype=spec.save_dtype).eval()
    if spec.lm_scale != 1.0:
        with torch.no_grad():
            for param in model.model.language_model.layers.parameters():
                if param.ndim == 2:
                    param.mul_(spec.lm_scale)
    return model
