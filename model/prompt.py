"""Prompt assembly shared by every backend: memory slots and a question become LLM inputs.

The prompt is the model's chat template with one user message holding the video placeholder and
the question. The rendered text is split on the placeholder; in its place go, for each slot in
order, the slot's text before its tokens (a time label in the model's own format, and any per-slot
markers), the slot's tokens (``[side*side, D]``), and its text after them. ``SlotFormat`` says what
that text is; each backend has one.

``splice_prompt`` builds ``inputs_embeds`` for models that take spliced embeddings with 1-D
positions (LLaVA-OV, Dynamic-VLM); the Qwen backends build token ids or positions of their own from
the same pieces (``render_chat``, ``slot_text_ids``, ``gap_note_ids``).

Token accounting: each slot's text may use up to the tokens the memory accounted for it (its
``text_tokens``, counted by the backend's ``label_tokens`` when the frame was stored); the memory part
of the prompt (visual + slot text tokens) is what the budget bounds.

This module knows nothing about Redis, Celery, HTTP, encoders or generation: it takes ``Slot`` values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jinja2 import TemplateError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.errors import VidmemError
from model import compressor
from model.compressor import BudgetError
from model.slots import Slot

DEFAULT_SYSTEM = "You are a helpful assistant."


class EmptyMemory(VidmemError, ValueError):
    """There are no slots to answer from (nothing has been encoded yet)."""

    code = "empty_memory"
    status = 409


class PromptError(ValueError):
    """The chat template cannot hold a question and one video placeholder."""


class BadQuestion(VidmemError, ValueError):
    """A question holds one of the model's special tokens (a control token, or its media placeholder)."""

    code = "bad_request"
    status = 400


def check_question(tokenizer: PreTrainedTokenizerBase, question: str, placeholder: str) -> None:
    """Raise BadQuestion when ``question`` holds a special token of the model, or its placeholder: such
    text would be read as the prompt's structure (a turn ending, a slot), not as the question."""
    specials = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab(), placeholder}
    found = sorted(t for t in specials if t and t in question)
    if found:
        raise BadQuestion(f"the question holds the model's special text {found[0]!r}; rephrase it without it")


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """How slots and question become a prompt."""

    timestamps: bool = True
    """Put each slot's text (its time label) around its tokens (off: the model's plain video prompt)."""
    text_tokens: int = 8
    """Per-slot text reserve of the memory's budget; a longer slot text raises BudgetError."""
    system: str | None = DEFAULT_SYSTEM
    """System message (None: none)."""

    def __post_init__(self) -> None:
        if self.text_tokens < 0:
            raise ValueError(f"text_tokens must be >= 0, got {self.text_tokens}")


@dataclass(frozen=True, slots=True, eq=False)
class Prompt:
    """Engine-neutral LLM inputs with their token accounting.

    Exactly one of ``input_ids`` [1, L] and ``inputs_embeds`` [1, L, H]; ``attention_mask`` [1, L];
    ``position_ids`` when the model needs its own (Qwen's M-RoPE: [4, 1, L], a text row then t, h, w),
    so that no request relies on a model's shared position state; ``model_kwargs``: whatever else the
    model's forward takes (precomputed vision features, grid sizes).
    """

    attention_mask: torch.Tensor
    visual_tokens: int
    text_tokens_per_slot: tuple[int, ...]
    prompt_tokens: int
    gap_tokens: int = 0
    """Tokens of the gap notes (outside the memory's budget; bounded by the number of gaps given)."""
    input_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.input_ids is None) == (self.inputs_embeds is None):
            raise ValueError("a prompt has exactly one of input_ids and inputs_embeds")

    @property
    def tokens_used(self) -> int:
        """The memory part of the prompt: visual tokens plus slot texts (bounded by the budget)."""
        return self.visual_tokens + sum(self.text_tokens_per_slot)


@dataclass(frozen=True, slots=True)
class SlotFormat:
    """The text around one slot's tokens: ``before(t0)`` (a time label, markers) and ``after``."""

    before: Callable[[float], str]
    after: str = ""


def compact_time(t0: float) -> tuple[int, str]:
    """A slot's start time, floored, in at most 5 digits: (value, unit).

    Whole seconds below 100000 s, then minutes, then hours from 6000000 s (~69 days), so that a time
    label's token count stays bounded (Qwen's tokenizer spends one token per digit). Every backend's
    label is built from it, each in its model's own words.
    """
    t = max(t0, 0.0)
    if t >= 6_000_000:
        return int(t // 3600), "hours"
    if t >= 100_000:
        return int(t // 60), "minutes"
    return int(t), "seconds"


def slot_label(t0: float) -> str:
    """``"12s"``, ``"3605s"``, ``"1667m"``, ``"1666h"``: ``compact_time`` with a one-letter unit."""
    value, unit = compact_time(t0)
    return f"{value}{unit[0]}"


LABEL_COLON = SlotFormat(before=lambda t0: f"{slot_label(t0)}: ")
"""``"12s: "`` before each slot (LLaVA-OV)."""


def gap_text(start: float, end: float) -> str:
    """The note put where the source showed nothing (a camera outage), in slot-label time."""
    return f"(no video {slot_label(start)}-{slot_label(end)}) "


def _gap_notes(slots: Sequence[Slot], gaps: Sequence[tuple[float, float]]) -> list[str]:
    """Per slot, the gap notes to put before it; one more entry for the gaps after the last slot."""
    notes = ["" for _ in range(len(slots) + 1)]
    starts = [s.t0 for s in slots]
    for a, b in sorted(gaps):
        at = next((i for i, t0 in enumerate(starts) if t0 >= b), len(slots))
        notes[at] += gap_text(a, b)
    return notes


def gap_note_ids(
    tokenizer: PreTrainedTokenizerBase, slots: Sequence[Slot], gaps: Sequence[tuple[float, float]]
) -> list[list[int]]:
    """Token ids of the gap notes before each slot, and one more entry for those after the last."""
    return [token_ids(tokenizer, n) if n else [] for n in _gap_notes(slots, gaps)]


def render_chat(
    tokenizer: PreTrainedTokenizerBase, question: str, cfg: PromptConfig, placeholder: str
) -> tuple[str, str]:
    """The chat template around one video placeholder: (text before it, text after it).

    ``placeholder``: what the template renders for a ``{"type": "video"}`` item (``<video>`` for
    LLaVA-OV). A template that only takes string content (a plain Qwen2 tokenizer) is given
    ``placeholder + "\\n" + question`` instead, the same layout.
    """
    check_question(tokenizer, question, placeholder)
    messages: list[dict[str, Any]] = []
    if cfg.system is not None:
        messages.append({"role": "system", "content": cfg.system})
    user_items = [{"type": "video"}, {"type": "text", "text": question}]
    try:
        rendered = tokenizer.apply_chat_template(
            [*messages, {"role": "user", "content": user_items}], tokenize=False, add_generation_prompt=True
        )
    except (TemplateError, TypeError):
        string_user = {"role": "user", "content": f"{placeholder}\n{question}"}
        rendered = tokenizer.apply_chat_template(
            [*messages, string_user], tokenize=False, add_generation_prompt=True
        )
    if not isinstance(rendered, str) or rendered.count(placeholder) != 1:
        raise PromptError(f"chat template must render exactly one {placeholder!r}; got {rendered!r}")
    before, after = rendered.split(placeholder)
    return before, after


def label_tokens(tokenizer: PreTrainedTokenizerBase, fmt: SlotFormat, starts: Sequence[float]) -> list[int]:
    """How many tokens the text around a slot starting at each time takes (``fmt``).

    The encoder worker stores this with each frame, so that the memory's budget pays for the
    exact prompt text (``compressor.plan_sides``) without knowing the tokenizer.
    """
    if not starts:
        return []
    after = len(token_ids(tokenizer, fmt.after)) if fmt.after else 0
    befores = tokenizer([fmt.before(t) for t in starts], add_special_tokens=False)["input_ids"]
    return [len(x) + after for x in befores]


def _allowed_text(slot: Slot, cfg: PromptConfig) -> int:
    """The text tokens the memory accounted for this slot (the config's reserve if it did not say)."""
    if not cfg.timestamps:
        return 0
    return slot.text_tokens or cfg.text_tokens


def slot_text_ids(
    tokenizer: PreTrainedTokenizerBase, slots: Sequence[Slot], cfg: PromptConfig, fmt: SlotFormat
) -> list[tuple[list[int], list[int]]]:
    """Token ids of the text before and after each slot's tokens (both empty when timestamps are off).

    Raises BudgetError, with both numbers, when a slot's text takes more tokens than the memory accounted.
    """
    if not cfg.timestamps:
        return [([], []) for _ in slots]
    after = token_ids(tokenizer, fmt.after) if fmt.after else []
    befores = tokenizer([fmt.before(s.t0) for s in slots], add_special_tokens=False)["input_ids"]
    out = [(list(b), list(after)) for b in befores]
    for slot, (b, a) in zip(slots, out, strict=True):
        if len(b) + len(a) > _allowed_text(slot, cfg):
            raise BudgetError(
                f"slot text {fmt.before(slot.t0) + fmt.after!r} takes {len(b) + len(a)} tokens, "
                f"the memory accounted {_allowed_text(slot, cfg)} for it"
            )
    return out


def check_layout(slots: Sequence[Slot], cfg: PromptConfig, budget: int | None = None) -> None:
    """Slots are non-empty, their grids match their sides, and (given a budget) they fit it."""
    if not slots:
        raise EmptyMemory("the memory holds no slots yet: nothing to answer from")
    for s in slots:
        if s.tokens.shape[:2] != (s.side, s.side):
            raise ValueError(f"slot {s.slot_id}: tokens {s.tokens.shape} do not match side {s.side}")
    if budget is not None:
        cost = compressor.layout_cost([s.side for s in slots], [_allowed_text(s, cfg) for s in slots])
        if cost > budget:
            raise BudgetError(f"the slots cost {cost} tokens, the budget is {budget}")


def flat_tokens(slots: Sequence[Slot]) -> np.ndarray:
    """Every slot's tokens, row-major, one after the other: [sum(side^2), D]."""
    return np.concatenate([np.asarray(s.tokens).reshape(s.side * s.side, -1) for s in slots])


def splice_prompt(
    lm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    visual: torch.Tensor,
    slots: Sequence[Slot],
    question: str,
    cfg: PromptConfig,
    fmt: SlotFormat,
    placeholder: str,
    gaps: Sequence[tuple[float, float]] = (),
    tail: torch.Tensor | None = None,
) -> Prompt:
    """``inputs_embeds`` [1, L, H] for ``question`` over ``slots``: text embeddings with each slot's
    LLM embeddings (``visual``: [sum(side^2), H], in slot order) spliced in, 1-D positions.

    ``gaps``: (start, end) spans in slot time where the source showed nothing; each becomes a note
    (``gap_text``) in time order among the slots, so the model knows the camera saw nothing then.
    ``placeholder``: as in ``render_chat``. ``tail``: [H] put once after the last slot (LLaVA-OV's
    ``image_newline``). Call ``check_layout`` first.
    """
    before, after = render_chat(tokenizer, question, cfg, placeholder)
    texts = slot_text_ids(tokenizer, slots, cfg, fmt)
    notes = gap_note_ids(tokenizer, slots, gaps)
    pre_ids, post_ids = token_ids(tokenizer, before), notes[-1] + token_ids(tokenizer, after)
    all_ids = [*pre_ids]
    for note, (b, a) in zip(notes, texts, strict=False):
        all_ids += [*note, *b, *a]
    all_ids += post_ids
    device, dtype = visual.device, visual.dtype
    with torch.no_grad():  # one embedding lookup for every text piece
        text_emb = lm.get_input_embeddings()(torch.tensor(all_ids, dtype=torch.long, device=device))
    pieces, t_at, v_at = [text_emb[: len(pre_ids)]], len(pre_ids), 0
    for slot, note, (b, a) in zip(slots, notes, texts, strict=False):
        n_before, n_vis = len(note) + len(b), slot.side * slot.side
        pieces += [text_emb[t_at : t_at + n_before], visual[v_at : v_at + n_vis]]
        pieces.append(text_emb[t_at + n_before : t_at + n_before + len(a)])
        t_at, v_at = t_at + n_before + len(a), v_at + n_vis
    if tail is not None:
        pieces.append(tail.to(device, dtype)[None])
    pieces.append(text_emb[t_at:])
    embeds = torch.cat(pieces).to(dtype)[None]
    return Prompt(
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device),
        visual_tokens=v_at,
        text_tokens_per_slot=tuple(len(b) + len(a) for b, a in texts),
        prompt_tokens=int(embeds.shape[1]),
        gap_tokens=sum(len(n) for n in notes),
    )


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The ids of ``text`` without special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
