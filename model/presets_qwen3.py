"""Qwen3-VL presets: seeded random checkpoints that need no download.

``tiny-qwen3-vl`` is a small test checkpoint (a 3-block ViT with DeepStack at blocks 1 and 2, a
2-layer LLM); ``random-qwen3-vl-8b`` has the sizes of ``Qwen/Qwen3-VL-8B-Instruct`` (ViT depth 27,
DeepStack at blocks 8/16/24, a 36-layer 4096-wide LLM, interleaved M-RoPE [24, 20, 20]), built
directly in bf16. Each is saved with ``save_pretrained``: the model, Qwen's real tokenizer
(``model.qwen_vocab``, Qwen3's specials at their hub ids, with a ChatML template that renders a
``{"type": "video"}`` item as ``<|vision_start|><|video_pad|><|vision_end|>`` as Qwen3-VL's template
does), and ``preprocessor_config.json``/``video_preprocessor_config.json`` (mean/std 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from model.preset_files import PresetSpec, random_model, save_checkpoint
from model.qwen_vocab import QWEN3_SPECIALS, qwen_tokenizer

QWEN3_VL_MEAN = (0.5, 0.5, 0.5)
QWEN3_VL_STD = (0.5, 0.5, 0.5)

VISION_IDS = {
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
"""Qwen3-VL's config ids (``vision_start_token_id``, ``vision_end_token_id``, ``image_token_id``,
``video_token_id``); ``build`` asserts the tokenizer gives these."""

# Qwen3-VL's ChatML: media items in the order given, no newline around them; content is a string
# or a list of {"type": text|image|video}.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


PRESETS: dict[str, PresetSpec] = {
    "tiny-qwen3-vl": PresetSpec(
        vision={
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            # A 32x32 learned position grid: exactly the backend's 512 px frames (32 patches of 16 px
            # a side), so the bilinear resampling of the grid is the identity here.
            "num_position_embeddings": 1024,
            # DeepStack from blocks 1 and 2; features k go into LLM layer k's output, so a 2-layer
            # LLM uses both (a third level would be silently dropped by the model).
            "deepstack_visual_indexes": [1, 2],
        },
        text={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 32768,
            # The 8B's [24, 20, 20] of 64 rotary frequencies, scaled to head_dim 32 (16 frequencies).
            "mrope_section": [6, 5, 5],
        },
        vocab_size=None,
        tie_embeddings=True,
        save_dtype=torch.float32,
        lm_scale=20.0,
    ),
    "random-qwen3-vl-8b": PresetSpec(
        vision={
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24],
        },
        text={
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "mrope_section": [24, 20, 20],
        },
        vocab_size=151936,
        tie_embeddings=False,
        save_dtype=torch.bfloat16,
    ),
}


def preset_config(name: str, tokenizer: PreTrainedTokenizerFast) -> Qwen3VLConfig:
    """The Qwen3VLConfig of preset ``name``; its vision token ids are checked against ``tokenizer``."""
    spec = PRESETS[name]
    for token, want in VISION_IDS.items():
        if tokenizer.convert_tokens_to_ids(token) != want:
            raise RuntimeError(
                f"{token} has id {tokenizer.convert_tokens_to_ids(token)}, Qwen3-VL's is {want}"
            )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    text = {k: v for k, v in spec.text.items() if k != "mrope_section"}
    text |= {
        "model_type": "qwen3_vl_text",
        "vocab_size": spec.vocab_size if spec.vocab_size is not None else len(tokenizer),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": spec.text["mrope_section"],
            "mrope_interleaved": True,
        },
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": spec.tie_embeddings,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "model_type": "qwen3_vl_vision",
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "hidden_act": "gelu_pytorch_tanh",
        **spec.vision,
    }
    return Qwen3VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=VISION_IDS["<|image_pad|>"],
        video_token_id=VISION_IDS["<|video_pad|>"],
        vision_start_token_id=VISION_IDS["<|vision_start|>"],
        vision_end_token_id=VISION_IDS["<|vision_end|>"],
        tie_word_embeddings=spec.tie_embeddings,
    )


def _preprocessor_config() -> dict[str, Any]:
    """The normalisation Qwen3-VL checkpoints declare (the backend reads mean, std and rescale)."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(QWEN3_VL_MEAN),
        "image_std": list(QWEN3_VL_STD),
        "rescale_factor": 1 / 255,
        "resample": 3,
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }


def build(name: str, out_dir: Path) -> None:
    """Build preset ``name`` (seeded random weights) into ``out_dir`` (must not exist)."""
    spec = PRESETS[name]
    tokenizer = qwen_tokenizer(QWEN3_SPECIALS, CHAT_TEMPLATE)
    config = preset_config(name, tokenizer)
    model = random_model(Qwen3VLForConditionalGeneration, config, spec)
    pre = _preprocessor_config()
    save_checkpoint(
        model, tokenizer, out_dir, {"preprocessor_config.json": pre, "video_preprocessor_config.json": pre}
    )


BUILDERS = dict.fromkeys(PRESETS, build)
