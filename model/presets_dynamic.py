"""Dynamic-VLM presets: seeded random checkpoints in the ``model.dynamic_ckpt`` layout, no download.

``tiny-dynamic-vlm`` is a test checkpoint with the real geometry (336 px, patch 14: a 24x24 grid) and
tiny widths; ``random-dynamic-vlm-14b`` has the sizes of ``Hon-Wong/ByteVideoLLM-14B`` (CLIP
ViT-L/14-336, an ``mlp2x_gelu`` projector, Qwen2.5-14B) in bf16, about 30 GB on disk.

Each is written part by part, with every key under its ``dynamic_ckpt.PREFIXES`` prefix: the vision
tower, the projector, then the LLM one decoder layer at a time into safetensors shards (with
``model.safetensors.index.json`` when there is more than one), so that building the 14B needs about
one shard of RAM (``shard_bytes``, 5 GB; ~7 GB in all), not 30 GB: one 14B decoder layer (0.55 GB) took
3.5 s to draw on 2 CPU cores, so the build is ~3 min plus writing ~30 GB. Loading it takes one copy of
the weights: ~30 GB of RAM on a CPU, or ~30 GB of RAM in passing and ~30 GB on a GPU.

Beside the weights: config.json (a Qwen2 config with LLaVA's ``mm_*`` keys), Qwen's real tokenizer with
a ChatML template whose video item renders as ``dynamic_ckpt.PLACEHOLDER``, preprocessor_config.json
(CLIP's mean/std) and generation_config.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from model.dynamic_ckpt import (
    CLIP_L_336,
    CLIP_MEAN,
    CLIP_STD,
    PLACEHOLDER,
    PROJECTOR_TYPE,
    geometry,
    make_projector,
    prefix_of,
    write_index,
)
from model.qwen_vocab import QWEN25_SPECIALS, qwen_tokenizer

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'video' -%}"
    "{{- '" + PLACEHOLDER + "\\n' -}}"
    "{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""Qwen2.5's ChatML; a video item renders as ``<image>`` on its own line before the text (the paper's
``"…; \\n"`` + question once the slots replace it), the same as a string-content template given
``"<image>\\n" + question``."""

VISION_TOWER = "openai/clip-vit-large-patch14-336"


@dataclass(frozen=True, slots=True)
class PresetSpec:
    """Architecture of one preset: CLIP vision tower + mlp2x_gelu projector + Qwen2 LLM."""

    vision: dict[str, Any]
    text: dict[str, Any]
    vocab_size: int | None  # None: the tokenizer's size
    tie_embeddings: bool
    save_dtype: torch.dtype
    write_vision_config: bool
    """Put ``vision_config`` in config.json (the released checkpoint has none: CLIP-L/336 is implied)."""
    lm_scale: float = 1.0
    """Factor on the LLM's decoder matrices (std 0.02): at tiny widths greedy decoding otherwise
    repeats one token; a larger scale gives varied answers (streaming tests, demos)."""
    seed: int = 0
    shard_bytes: int = 5_000_000_000


PRESETS: dict[str, PresetSpec] = {
    "tiny-dynamic-vlm": PresetSpec(
        vision={
            **CLIP_L_336,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 32,
        },
        text={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
        },
        vocab_size=None,
        tie_embeddings=True,
        save_dtype=torch.float32,
        write_vision_config=True,
        lm_scale=20.0,
    ),
    "random-dynamic-vlm-14b": PresetSpec(
        vision=CLIP_L_336,
        text={  # Qwen2.5-14B-Instruct's sizes
            "hidden_size": 5120,
            "intermediate_size": 13824,
            "num_hidden_layers": 48,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "max_position_embeddings": 32768,
            "max_window_layers": 48,
            "rms_norm_eps": 1e-5,
        },
        vocab_size=152064,
        tie_embeddings=False,
        save_dtype=torch.bfloat16,
        write_vision_config=False,
    ),
}


def text_config(spec: PresetSpec, vocab_size: int) -> Qwen2Config:
    """The preset's Qwen2 config with Qwen's special-token ids."""
    return Qwen2Config(
        vocab_size=vocab_size,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        hidden_act="silu",
        use_sliding_window=False,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        **spec.text,
    )


def config_json(spec: PresetSpec, text: Qwen2Config, vision: CLIPVisionConfig) -> dict[str, Any]:
    """config.json: the Qwen2 config plus LLaVA's ``mm_*`` keys (and ``vision_config`` if the spec says)."""
    raw = {**text.to_dict(), "model_type": "qwen2", "architectures": ["LlavaQwenForCausalLM"]}
    raw.update(
        mm_vision_tower=VISION_TOWER,
        mm_hidden_size=vision.hidden_size,
        mm_projector_type=PROJECTOR_TYPE,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
    )
    if spec.write_vision_config:
        raw["vision_config"] = {k: v for k, v in vision.to_dict().items() if k in CLIP_L_336}
    return raw


def _normal(shape: tuple[int, ...], std: float, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen).to(dtype)


def _layer_state(cfg: Qwen2Config, i: int, spec: PresetSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Decoder layer ``i``'s weights as transformers initialises them (matrices N(0, 0.02) x lm_scale,
    biases 0, norms 1), without building the layer: shapes come from a meta-device copy."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Qwen2DecoderLayer(cfg, i).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if len(shape) == 2:
            out[name] = _normal(shape, cfg.initializer_range * spec.lm_scale, spec.save_dtype, gen)
        elif name.endswith("layernorm.weight"):
            out[name] = torch.ones(shape, dtype=spec.save_dtype)
        else:
            out[name] = torch.zeros(shape, dtype=spec.save_dtype)
    return out


def llm_states(cfg: Qwen2Config, spec: PresetSpec, gen: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
    """The Qwen2ForCausalLM's weights (keys ``model.*``, ``lm_head.weight``), a piece at a time."""
    shape = (cfg.vocab_size, cfg.hidden_size)
    yield {"model.embed_tokens.weight": _normal(shape, cfg.initializer_range, spec.save_dtype, gen)}
    for i in range(cfg.num_hidden_layers):
        yield {f"model.layers.{i}.{k}": v for k, v in _layer_state(cfg, i, spec, gen).items()}
    yield {"model.norm.weight": torch.ones(cfg.hidden_size, dtype=spec.save_dtype)}
    if not spec.tie_embeddings:  # tied: the loader takes the embedding
        yield {"lm_head.weight": _normal(shape, cfg.initializer_range, spec.save_dtype, gen)}


class ShardWriter:
    """Writes ``{key: tensor}`` pieces into safetensors shards of about ``shard_bytes``; ``close``
    names them ``model.safetensors`` (one) or ``model-0000i-of-0000n.safetensors`` with an index."""

    def __init__(self, out_dir: Path, shard_bytes: int) -> None:
        self.out_dir, self.shard_bytes = out_dir, shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.shards: list[list[str]] = []
        self.total = 0

    def add(self, part: str, tensors: dict[str, torch.Tensor]) -> None:
        """Add a piece of ``part`` (keys without the part's prefix)."""
        prefix = prefix_of(part)
        for key, value in tensors.items():
            self.pending[prefix + key] = value.contiguous()
            self.total += value.numel() * value.element_size()
        if sum(v.numel() * v.element_size() for v in self.pending.values()) >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            save_file(self.pending, str(self.out_dir / f"shard-{len(self.shards)}.tmp"), {"format": "pt"})
            self.shards.append(list(self.pending))
            self.pending = {}

    def close(self) -> None:
        self._flush()
        n = len(self.shards)
        if n == 1:
            (self.out_dir / "shard-0.tmp").rename(self.out_dir / "model.safetensors")
            return
        weight_map: dict[str, str] = {}
        for i, keys in enumerate(self.shards):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            (self.out_dir / f"shard-{i}.tmp").rename(self.out_dir / name)
            weight_map.update(dict.fromkeys(keys, name))
        write_index(self.out_dir, weight_map, self.total)


def _side_files(image_size: int) -> dict[str, Any]:
    """preprocessor_config.json (CLIP's normalisation) and generation_config.json (greedy, ChatML eos)."""
    return {
        "preprocessor_config.json": {
            "do_normalize": True,
            "do_rescale": True,
            "image_mean": list(CLIP_MEAN),
            "image_std": list(CLIP_STD),
            "rescale_factor": 1 / 255,
            "resample": 3,
            "size": {"height": image_size, "width": image_size},
        },
        "generation_config.json": {
            "bos_token_id": 151643,
            "eos_token_id": [151645, 151643],
            "pad_token_id": 151643,
            "do_sample": False,
        },
    }


def build(name: str, out_dir: Path) -> None:
    """Build preset ``name`` (seeded random weights) into ``out_dir`` (must not exist)."""
    spec = PRESETS[name]
    tokenizer = qwen_tokenizer(QWEN25_SPECIALS, CHAT_TEMPLATE)
    text = text_config(spec, spec.vocab_size if spec.vocab_size is not None else len(tokenizer))
    vision = CLIPVisionConfig(**spec.vision)
    out_dir.mkdir(parents=True)
    torch.manual_seed(spec.seed)
    writer = ShardWriter(out_dir, spec.shard_bytes)
    tower = CLIPVisionModel._from_config(vision).eval()  # CLIP-L: 1.2 GB in fp32
    writer.add("vision", {k: v.to(spec.save_dtype) for k, v in tower.state_dict().items()})
    del tower
    projector = make_projector(vision.hidden_size, text.hidden_size)
    writer.add("projector", {k: v.detach().to(spec.save_dtype) for k, v in projector.state_dict().items()})
    gen = torch.Generator().manual_seed(spec.seed)
    for piece in llm_states(text, spec, gen):
        writer.add("llm", piece)
    writer.close()
    (out_dir / "config.json").write_text(json.dumps(config_json(spec, text, vision), indent=2))
    tokenizer.save_pretrained(out_dir)
    for file, value in _side_files(geometry(vision)[0]).items():
        (out_dir / file).write_text(json.dumps(value, indent=2))


BUILDERS = dict.fromkeys(PRESETS, build)
