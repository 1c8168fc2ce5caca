"""Qwen3-VL's video prompt for memory slots: token ids, M-RoPE positions and the encoder outputs.

Qwen3-VL's processor writes a video as ``<{t:.1f} seconds><|vision_start|><|video_pad|>×N<|vision_end|>``
per temporal patch, with one ``video_grid_thw`` row (t = 1) each: that is the memory's slot layout. So
each slot is written ``<label><|vision_start|>`` + ``<|video_pad|>`` × side² + ``<|vision_end|>``, in the
place where the chat template renders the ``{"type": "video"}`` item
(``<|vision_start|><|video_pad|><|vision_end|>``, which the processor also replaces whole).

Time labels (``qwen3_label``): Qwen3's own words, without the fraction: ``"<12 seconds>"``. Token
counts with Qwen's tokenizer (digits are split one by one, `` seconds`` is one token), label alone /
with the slot's two markers:

    t        "<t.1f seconds>" (native)   "<t seconds>" (used)   "<ts>"
    5 s      6 / 8                       4 / 6                  4 / 6
    3600 s   9 / 11                      7 / 9                  7 / 9
    86399 s  10 / 12                     8 / 10                 8 / 10

``"<12 seconds>"`` costs what ``"<12s>"`` costs and keeps the model's own word; dropping ``.0`` saves
2 tokens a slot. A keyframe slot's native time (the mean of its temporal patch's two frame times) is
its frame time, so the label is the start of the slot, floored to whole seconds. From 100000 s the
label counts minutes, from 6000000 s hours (``"<1666 minutes>"``), so a label never passes 10 tokens
with its markers (the family's per-slot reserve is 12).

With ``PromptConfig.timestamps`` off the labels go but the markers stay (the model needs them around
every temporal patch): 2 tokens a slot, which ``text_tokens_per_slot`` reports.

The LLM inputs are token ids with ``<|video_pad|>`` at every visual position, ``mm_token_type_ids``
(2 there), one ``video_grid_thw`` row [1, 2s, 2s] per slot, ``mm_encoder_outputs`` with the slots'
main and DeepStack features (split per slot, as ``get_video_features`` returns them), and explicit
M-RoPE ``position_ids`` [4, 1, L] (``model.mrope``). With ``position_ids`` given, ``generate`` skips
``_prepare_position_ids_for_generation`` (so it neither reads nor writes the model's shared
``rope_deltas``), extends them by one per step for decoding, and the model's forward skips
``compute_3d_position_ids``: concurrent requests never share position state.

This module knows nothing about encoders, weights or generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

from model.mrope import Segment, generate_positions
from model.prompt import (
    Prompt,
    PromptConfig,
    PromptError,
    SlotFormat,
    compact_time,
    gap_note_ids,
    render_chat,
    slot_text_ids,
    token_ids,
)
from model.slots import Slot

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END
"""What Qwen3-VL's chat template renders for a ``{"type": "video"}`` item."""
VIDEO_TYPE = 2
"""``mm_token_type_ids`` value of a video token (text 0, image 1)."""


def qwen3_label(t0: float) -> str:
    """``"<12 seconds>"``: a slot's start in Qwen3-VL's time words (``compact_time``)."""
    value, unit = compact_time(t0)
    return f"<{value} {unit}>"


QWEN3_SLOT = SlotFormat(before=lambda t0: qwen3_label(t0) + VISION_START, after=VISION_END)
"""``<12 seconds><|vision_start|>`` before a slot's tokens, ``<|vision_end|>`` after."""


def slot_texts(
    tokenizer: PreTrainedTokenizerBase, slots: Sequence[Slot], cfg: PromptConfig
) -> list[tuple[list[int], list[int]]]:
    """Ids before and after each slot's tokens: label and markers, or the markers alone (timestamps off)."""
    if cfg.timestamps:
        return slot_text_ids(tokenizer, slots, cfg, QWEN3_SLOT)
    start, end = token_ids(tokenizer, VISION_START), token_ids(tokenizer, VISION_END)
    return [(list(start), list(end)) for _ in slots]


def layout_ids(
    tokenizer: PreTrainedTokenizerBase,
    slots: Sequence[Slot],
    question: str,
    cfg: PromptConfig,
    gaps: Sequence[tuple[float, float]] = (),
) -> tuple[list[int], list[Segment], list[int], int]:
    """The prompt's ids (``<|video_pad|>`` × side² for each slot), its M-RoPE segments, each slot's text
    tokens and the gap-note tokens."""
    before, after = render_chat(tokenizer, question, cfg, VIDEO_PLACEHOLDER)
    texts = slot_texts(tokenizer, slots, cfg)
    notes = gap_note_ids(tokenizer, slots, gaps)
    pad = token_ids(tokenizer, VIDEO_PAD)
    ids: list[int] = []
    segments: list[Segment] = []
    run = token_ids(tokenizer, before)
    for slot, note, (b, a) in zip(slots, notes, texts, strict=False):
        run += [*note, *b]
        ids += run
        segments.append(("text", len(run)))
        ids += pad * (slot.side * slot.side)
        segments.append(("vision", slot.side))
        run = list(a)
    run += [*notes[-1], *token_ids(tokenizer, after)]
    ids += run
    segments.append(("text", len(run)))
    return ids, segments, [len(b) + len(a) for b, a in texts], sum(len(n) for n in notes)


def encoder_outputs(levels: torch.Tensor, sides: Sequence[int]) -> BaseModelOutputWithDeepstackFeatures:
    """levels: [1 + n_deepstack, N, H] (main grid, then DeepStack) -> what ``get_video_features``
    returns for one video row per slot: ``pooler_output`` split per slot, and each DeepStack level
    split the same way."""
    sizes = [s * s for s in sides]
    split = [tuple(torch.split(level, sizes)) for level in levels]
    # get_video_features returns these tuples too, though the dataclass annotates plain tensors.
    return BaseModelOutputWithDeepstackFeatures(
        pooler_output=split[0],  # type: ignore[arg-type]
        deepstack_features=split[1:],  # type: ignore[arg-type]
    )


def video_prompt(
    tokenizer: PreTrainedTokenizerBase,
    slots: Sequence[Slot],
    question: str,
    cfg: PromptConfig,
    levels: torch.Tensor,
    video_token_id: int,
    gaps: Sequence[tuple[float, float]] = (),
) -> Prompt:
    """The Prompt for ``question`` over ``slots``; ``levels`` [1 + n_deepstack, sum(side²), H] on the
    model's device and dtype, in slot order. Call ``model.prompt.check_layout`` first."""
    ids, segments, texts, gap_tokens = layout_ids(tokenizer, slots, question, cfg, gaps)
    device = levels.device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    is_video = input_ids == video_token_id
    visual = sum(s.side * s.side for s in slots)
    if int(is_video.sum()) != visual or levels.shape[1] != visual:
        raise PromptError(
            f"{int(is_video.sum())} video tokens in the prompt, {levels.shape[1]} features, "
            f"{visual} slot tokens: the question or the template holds {VIDEO_PAD!r}?"
        )
    sides = [s.side for s in slots]
    grid = torch.tensor([[1, 2 * s, 2 * s] for s in sides], dtype=torch.long, device=device)
    return Prompt(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        position_ids=generate_positions(segments).to(device),
        model_kwargs={
            "mm_token_type_ids": is_video.long() * VIDEO_TYPE,
            "video_grid_thw": grid,
            "mm_encoder_outputs": {"video": encoder_outputs(levels, sides)},
        },
        visual_tokens=visual,
        text_tokens_per_slot=tuple(texts),
        prompt_tokens=len(ids),
        gap_tokens=gap_tokens,
    )
