"""Qwen2.5-VL presets: seeded random checkpoints that need no download.

``tiny-qwen2.5-vl`` is a small test checkpoint (a 2-layer window-attention ViT and a 2-layer LLM);
``random-qwen2.5-vl-7b`` has the sizes of ``Qwen/Qwen2.5-VL-7B-Instruct`` (its ``config.json``:
a 32-block ViT of width 1280 with full attention in blocks 7/15/23/31, and the Qwen2.5-7B LLM),
random weights, built and saved in bf16. Each is saved with ``save_pretrained``: the model, Qwen's
real tokenizer with Qwen2.5's special tokens at their hub ids (``<|vision_start|>`` 151652,
``<|image_pad|>`` 151655, ``<|video_pad|>`` 151656, ``<|im_end|>`` 151645) and Qwen2.5-VL's own chat
template, and a ``preprocessor_config.json`` with Qwen's CLIP normalisation; it loads through
``from_pretrained`` like any checkpoint.

This module knows nothing about frames, memory or prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from model.preset_files import PresetSpec, random_model, save_checkpoint
from model.qwen_vocab import QWEN25_SPECIALS, qwen_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation, which every Qwen2-VL/Qwen2.5-VL checkpoint declares."""

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL-Instruct's chat template (ChatML; a video item renders
``<|vision_start|><|video_pad|><|vision_end|>``, with no text around it)."""

TOKEN_IDS = {
    "bos_token_id": ("<|endoftext|>", 151643),
    "eos_token_id": ("<|im_end|>", 151645),
    "vision_start_token_id": ("<|vision_start|>", 151652),
    "vision_end_token_id": ("<|vision_end|>", 151653),
    "image_token_id": ("<|image_pad|>", 151655),
    "video_token_id": ("<|video_pad|>", 151656),
}
"""Config field -> (token, id in Qwen2.5-VL-7B-Instruct's config.json)."""


PRESETS: dict[str, PresetSpec] = {
    "tiny-qwen2.5-vl": PresetSpec(
        vision={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
        },
        text={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "max_window_layers": 2,
            # head_dim 16: 8 rotary frequencies split over t, h, w as the real [16, 24, 24] of 64.
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [2, 3, 3],
            },
        },
        vocab_size=None,
        tie_embeddings=True,
        save_dtype=torch.float32,
        lm_scale=20.0,
    ),
    "random-qwen2.5-vl-7b": PresetSpec(
        vision={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        text={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "max_window_layers": 28,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [16, 24, 24],
            },
        },
        vocab_size=152064,
        tie_embeddings=False,
        save_dtype=torch.bfloat16,
    ),
}


def token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The config's token-id fields, read from ``tokenizer``; RuntimeError unless they are Qwen's ids."""
    out: dict[str, int] = {}
    for key, (token, want) in TOKEN_IDS.items():
        found = tokenizer.convert_tokens_to_ids(token)
        if found != want:
            raise RuntimeError(f"{token} has id {found} in the tokenizer, Qwen2.5-VL's config says {want}")
        out[key] = want
    return out


def preset_config(name: str, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    """The Qwen2_5_VLConfig of preset ``name``; token ids checked against ``tokenizer``."""
    spec = PRESETS[name]
    ids = token_ids(tokenizer)
    if spec.vision["out_hidden_size"] != spec.text["hidden_size"]:
        raise ValueError(f"{name}: the merger's output width must be the LLM's width")
    text = {
        "vocab_size": spec.vocab_size if spec.vocab_size is not None else len(tokenizer),
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "sliding_window": 32768,
        "tie_word_embeddings": spec.tie_embeddings,
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        **spec.text,
    }
    vision = {
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "tokens_per_second": 2,
        **spec.vision,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=spec.tie_embeddings,
    )


def preprocessor_config(config: Qwen2_5_VLConfig) -> dict[str, Any]:
    """The preprocessing Qwen2.5-VL checkpoints declare (CLIP normalisation, 28-px patch merge)."""
    vision = config.vision_config
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "rescale_factor": 1 / 255,
        "resample": 3,
        "patch_size": vision.patch_size,  # type: ignore[union-attr]
        "merge_size": vision.spatial_merge_size,  # type: ignore[union-attr]
        "temporal_patch_size": vision.temporal_patch_size,  # type: ignore[union-attr]
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "image_processor_type": "Qwen2VLImageProcessor",
    }


def build(name: str, out_dir: Path) -> None:
    """Build preset ``name`` (seeded random weights) into ``out_dir`` (must not exist)."""
    spec = PRESETS[name]
    tokenizer = qwen_tokenizer(QWEN25_SPECIALS, CHAT_TEMPLATE)
    config = preset_config(name, tokenizer)
    model = random_model(Qwen2_5_VLForConditionalGeneration, config, spec)
    save_checkpoint(model, tokenizer, out_dir, {"preprocessor_config.json": preprocessor_config(config)})


BUILDERS = dict.fromkeys(PRESETS, build)
