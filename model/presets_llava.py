"""LLaVA-OneVision presets: seeded random checkpoints that need no download.

``tiny`` is a small test checkpoint; ``random-0.5b`` and ``random-7b`` have the sizes of
``llava-onevision-qwen2-0.5b-ov-hf`` and ``-7b-ov-hf``; ``random-llava-video-7b`` has the layout of
``llava-hf/LLaVA-Video-7B-Qwen2-hf`` (the same class; its config differs in the vision aspect ratio
and the LLM's window layers). Each is saved with ``save_pretrained`` (model, Qwen's real tokenizer
with ``<image>``/``<video>`` at their hub ids 151646/151647, and a ``preprocessor_config.json``) and
loaded through ``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast

from model.preset_files import PresetSpec, random_model, save_checkpoint
from model.qwen_vocab import QWEN2_SPECIALS, qwen_tokenizer

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SPECIAL_TOKENS = (*QWEN2_SPECIALS, "<image>", "<video>")
"""Qwen2's ChatML tokens (151643..151645), then ``<image>`` 151646 and ``<video>`` 151647 as in llava-hf."""

# LLaVA-OneVision's prompt format (Qwen2 ChatML): media placeholders first, each on its own
# line, then the text. Content is either a string or a list of {"type": text|image|video}.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'video' -%}{{- '<video>\\n' -}}{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


_SIGLIP_SO400M: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    # The hub LLaVA-OV checkpoints keep 26 of so400m's 27 layers: vision_feature_layer -1 of
    # this tower is the penultimate layer of the original SigLIP, as LLaVA-OV was trained.
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
}

PRESETS: dict[str, PresetSpec] = {
    "tiny": PresetSpec(
        vision={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        text={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
        },
        vocab_size=None,
        tie_embeddings=True,
        save_dtype=torch.float32,
        lm_scale=20.0,
    ),
    "random-0.5b": PresetSpec(
        vision=_SIGLIP_SO400M,
        text={
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "max_window_layers": 24,
        },
        vocab_size=151936,
        tie_embeddings=True,
        save_dtype=torch.bfloat16,
    ),
    "random-7b": PresetSpec(
        vision=_SIGLIP_SO400M,
        text={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "max_window_layers": 28,
        },
        vocab_size=152064,
        tie_embeddings=False,
        save_dtype=torch.bfloat16,
    ),
}
# LLaVA-Video-7B-Qwen2-hf: the LLaVA-OV class with the same SigLIP tower and Qwen2-7B LLM.
PRESETS["random-llava-video-7b"] = dataclasses.replace(PRESETS["random-7b"], seed=1)


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of a single token that must be in the vocabulary."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise KeyError(f"token {token!r} is not in the tokenizer")
    return found


def preset_config(name: str, tokenizer: PreTrainedTokenizerFast) -> LlavaOnevisionConfig:
    """The LlavaOnevisionConfig of preset ``name``; token ids come from ``tokenizer``."""
    spec = PRESETS[name]
    ids = {t: token_id(tokenizer, t) for t in SPECIAL_TOKENS}
    text = {
        "model_type": "qwen2",
        "vocab_size": spec.vocab_size if spec.vocab_size is not None else len(tokenizer),
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "tie_word_embeddings": spec.tie_embeddings,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        **spec.text,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "image_size": 384,
        "patch_size": 14,
        "vision_use_head": False,
        **spec.vision,
    }
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=spec.tie_embeddings,
    )


def _preprocessor_config(image_size: int) -> dict[str, Any]:
    """The preprocessing the hub LLaVA-OV checkpoints declare (SigLIP normalisation)."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(SIGLIP_MEAN),
        "image_std": list(SIGLIP_STD),
        "rescale_factor": 1 / 255,
        "resample": 3,
        "size": {"height": image_size, "width": image_size},
    }


def build(name: str, out_dir: Path) -> None:
    """Build preset ``name`` (seeded random weights) into ``out_dir`` (must not exist)."""
    spec = PRESETS[name]
    tokenizer = qwen_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE)
    config = preset_config(name, tokenizer)
    model = random_model(LlavaOnevisionForConditionalGeneration, config, spec)
    size = int(config.vision_config.image_size)  # type: ignore[union-attr]
    save_checkpoint(model, tokenizer, out_dir, {"preprocessor_config.json": _preprocessor_config(size)})


BUILDERS = dict.fromkeys(PRESETS, build)
