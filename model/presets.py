"""Seeded random LLaVA-OneVision checkpoints that need no download.

A preset name (``tiny``, ``random-0.5b``, ``random-7b``) resolves to a local checkpoint
directory, built once with ``save_pretrained`` (model, tokenizer and a
``preprocessor_config.json``) and then loaded through the very same ``from_pretrained``
path as a hub id or any local checkpoint. Anything that is not a preset name resolves to
itself.

The tokenizer of a preset is a small byte-level BPE trained deterministically on a built-in
English corpus, with Qwen2's ChatML special tokens plus ``<image>`` and ``<video>``; the
model config's image/video token ids are those tokens' ids.

This module knows nothing about frames, memory or prompts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast

from model.names import PRESET_NAMES

PRESET_VERSION = 1
"""Bumped whenever a preset's definition changes; a cached build of another version is rebuilt."""

MARKER = "vidmem_preset.json"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

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

_CORPUS = """
The camera records a video of the street. A red car drives past the shop at noon.
A blue truck stops at the corner and a man in a black coat crosses the road.
The video shows a kitchen with a white table, two chairs and a green cup.
A woman opens the door at eight in the morning and leaves at six in the evening.
The first frame is dark, the second frame is bright, and the third frame is yellow.
How many people are in the room? There are three people and one dog.
What colour is the ball? The ball is orange. What time is it? It is ten past nine.
The security camera watches the parking lot all night. At midnight a cat walks by.
A child plays with a purple kite in the park while the sun sets behind the trees.
The screen shows numbers: one, two, three, four, five, six, seven, eight, nine, ten.
Eleven, twelve, twenty, thirty, forty, fifty, sixty, hundred, thousand, minute, second, hour.
The drone flies over the river and films a bridge, a boat and a grey building.
Describe the scene. Summarise the video. When did the person enter the frame?
Before the rain started, the road was dry; after the storm, the road was wet and shiny.
A bird lands on the window. The lamp is on. The clock on the wall shows seven.
The box on the shelf is brown, the bag is pink, the bottle is clear and the phone is silver.
She picks up a book, reads a page, and puts it back on the desk near the laptop.
The webcam streams live from the office; workers arrive, type, talk and go home.
Yesterday the traffic was heavy. Today the street is empty and quiet.
The image is blurry at the start but becomes sharp when the camera focuses.
A train enters the station, the doors open, passengers step out, and the train departs.
Is there a person wearing a hat? Yes, a tall man wears a white hat and blue jeans.
The video lasts twelve minutes. The event happens at the beginning, middle and end.
Look at the left side, the right side, the top and the bottom of the picture.
Frames are sampled every second; each keyframe is encoded into visual tokens.
The answer is yes. The answer is no. I do not know. Maybe. Probably. Certainly.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday; January to December.
The lighting changes from daylight to lamplight; shadows grow longer in the afternoon.
A cyclist rides along the pavement, rings a bell, and turns left at the traffic light.
Someone carries a large umbrella, another person holds a coffee, and a third waves hello.
The football match starts at three o'clock; the players run, kick, jump and celebrate.
Inside the warehouse, forklifts move pallets, boxes are stacked, and a door slides open.
The microphone picks up speech, music, laughter, footsteps and the hum of an engine.
Zoom in on the face, zoom out to the crowd, pan across the square, tilt up to the sky.
A gardener waters flowers: roses, tulips, daisies and sunflowers along a wooden fence.
Where is the key? It is under the mat, beside the plant, behind the sofa, or inside the drawer.
Which object appears first, which object disappears last, and what moves the fastest?
The vehicle count rises during the morning rush and falls late at night after eleven.
"""


def _train_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the built-in corpus, deterministic for a given vocab size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line.strip() for line in _CORPUS.strip().splitlines() if line.strip()]
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<image>", "<video>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@dataclass(frozen=True, slots=True)
class PresetSpec:
    """Architecture of one preset: SigLIP vision tower + Qwen2 LLM (sizes as in the hub configs)."""

    vision: dict[str, Any]
    text: dict[str, Any]
    vocab_size: int | None  # None: the tokenizer's size
    tie_embeddings: bool
    save_dtype: torch.dtype
    lm_scale: float = 1.0
    """Factor on the LLM's decoder matrices after the library's init (std 0.02). At tiny widths
    the residual branches are then negligible and greedy decoding repeats the last prompt token;
    a larger scale gives varied answers (useful for streaming tests and demos)."""
    seed: int = 0


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


if tuple(PRESETS) != PRESET_NAMES:  # model.names answers without importing this module (torch)
    raise RuntimeError(f"model.names.PRESET_NAMES {PRESET_NAMES} differs from the presets {tuple(PRESETS)}")


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


def build_preset(name: str, out_dir: Path) -> None:
    """Build preset ``name`` (seeded random weights) and save it into ``out_dir`` (must not exist)."""
    spec = PRESETS[name]
    tokenizer = _train_tokenizer()
    config = preset_config(name, tokenizer)
    eos = [token_id(tokenizer, t) for t in ("<|im_end|>", "<|endoftext|>")]
    torch.manual_seed(spec.seed)
    # Built directly in the saved dtype: random-7b in fp32 would need 32 GB of RAM.
    model = LlavaOnevisionForConditionalGeneration._from_config(config, dtype=spec.save_dtype).eval()
    if spec.lm_scale != 1.0:
        with torch.no_grad():
            for param in model.model.language_model.layers.parameters():
                if param.ndim == 2:
                    param.mul_(spec.lm_scale)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    size = int(config.vision_config.image_size)  # type: ignore[union-attr]
    (out_dir / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(size), indent=2))
    marker = {"preset": name, "version": PRESET_VERSION, "seed": spec.seed}
    (out_dir / MARKER).write_text(json.dumps(marker))


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
    if name not in PRESETS:
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
