"""Saving a preset checkpoint: what every family's preset module writes the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
