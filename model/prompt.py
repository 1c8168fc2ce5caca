"""Prompt assembly: memory slots and a question become ``inputs_embeds`` for the LLM.

The prompt is the model's chat template with one user message holding the video placeholder
and the question. The rendered text is split on the placeholder; in its place go, for each
slot in order, an optional timestamp text (``"12s: "``) and the slot's tokens
(``[side*side, D]``), then one ``image_newline`` after all slots, as LLaVA-OV's video path does.
With ``timestamps=False`` and native 14x14 slots the result is exactly transformers' own video
prompt.

Token accounting: each slot's timestamp text may use up to the memory's per-slot ``text_tokens``
reserve; the memory part of the prompt (visual + slot text tokens) is what the budget bounds.

Counting (``count_slot_text``) is kept apart from assembling, and needs only the tokenizer.
This module knows nothing about Redis, Celery, HTTP, encoders or generation: it takes ``Slot`` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


class LanguageBackend(Protocol):
    """What the answerer needs of a backend (``LlavaOVBackend`` is one)."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...
    @property
    def lm(self) -> PreTrainedModel: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def image_newline(self) -> np.ndarray: ...

    def to_llm_embeds(self, tokens: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """How slots and question become a prompt."""

    timestamps: bool = True
    """Put ``"<t0>: "`` before each slot's tokens (off: transformers' plain video prompt)."""
    text_tokens: int = 8
    """Per-slot text reserve of the memory's budget; a longer timestamp raises BudgetError."""
    system: str | None = DEFAULT_SYSTEM
    """System message (None: none)."""
    placeholder: str = "<video>"
    """The media placeholder the chat template renders for a video item."""

    def __post_init__(self) -> None:
        if self.text_tokens < 0:
            raise ValueError(f"text_tokens must be >= 0, got {self.text_tokens}")


@dataclass(frozen=True, slots=True, eq=False)
class Prompt:
    """An assembled prompt. inputs_embeds: [1, L, H]; attention_mask: [1, L] (all ones)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    visual_tokens: int
    text_tokens_per_slot: tuple[int, ...]
    prompt_tokens: int
    gap_tokens: int = 0
    """Tokens of the gap notes (outside the memory's budget; bounded by the number of gaps given)."""

    @property
    def tokens_used(self) -> int:
        """The memory part of the prompt: visual tokens plus slot texts (bounded by the budget)."""
        return self.visual_tokens + sum(self.text_tokens_per_slot)


def slot_label(t0: float) -> str:
    """Compact start time of a slot, at most 5 digits and a unit (floored).

    Whole seconds below 100000 s ("12s", "3605s"), then minutes ("1666m"), then hours from
    6000000 s (~69 days, "1666h"), so a timestamp's token count stays bounded.
    """
    t = max(t0, 0.0)
    if t >= 6_000_000:
        return f"{int(t // 3600)}h"
    if t >= 100_000:
        return f"{int(t // 60)}m"
    return f"{int(t)}s"


def slot_text(slot: Slot) -> str:
    """The text put before a slot's tokens."""
    return f"{slot_label(slot.t0)}: "


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


def render_chat(tokenizer: PreTrainedTokenizerBase, question: str, cfg: PromptConfig) -> tuple[str, str]:
    """The chat template around one video placeholder: (text before it, text after it).

    Uses LLaVA-style list content; a template that only takes string content (a plain Qwen2
    tokenizer) is given ``"<video>\\n" + question`` instead, the same layout.
    """
    messages: list[dict[str, Any]] = []
    if cfg.system is not None:
        messages.append({"role": "system", "content": cfg.system})
    user_items = [{"type": "video"}, {"type": "text", "text": question}]
    try:
        rendered = tokenizer.apply_chat_template(
            [*messages, {"role": "user", "content": user_items}], tokenize=False, add_generation_prompt=True
        )
    except (TemplateError, TypeError):
        string_user = {"role": "user", "content": f"{cfg.placeholder}\n{question}"}
        rendered = tokenizer.apply_chat_template(
            [*messages, string_user], tokenize=False, add_generation_prompt=True
        )
    if not isinstance(rendered, str) or rendered.count(cfg.placeholder) != 1:
        raise PromptError(f"chat template must render exactly one {cfg.placeholder!r}; got {rendered!r}")
    before, after = rendered.split(cfg.placeholder)
    return before, after


def label_tokens(tokenizer: PreTrainedTokenizerBase, starts: Sequence[float]) -> list[int]:
    """How many tokens the timestamp text of a slot starting at each time takes.

    The encoder worker stores this with each frame, so that the memory's budget pays for the
    exact prompt text (``compressor.plan_sides``) without knowing the tokenizer.
    """
    texts = [f"{slot_label(t)}: " for t in starts]
    return [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _allowed_text(slot: Slot, cfg: PromptConfig) -> int:
    """The text tokens the memory accounted for this slot (the config's reserve if it did not say)."""
    if not cfg.timestamps:
        return 0
    return slot.text_tokens or cfg.text_tokens


def count_slot_text(
    tokenizer: PreTrainedTokenizerBase, slots: Sequence[Slot], cfg: PromptConfig
) -> list[list[int]]:
    """Token ids of each slot's timestamp text ([] when timestamps are off).

    Raises BudgetError, with both numbers, when a text takes more tokens than the memory accounted.
    """
    if not cfg.timestamps:
        return [[] for _ in slots]
    ids = [list(x) for x in tokenizer([slot_text(s) for s in slots], add_special_tokens=False)["input_ids"]]
    for slot, slot_ids in zip(slots, ids, strict=True):
        if len(slot_ids) > _allowed_text(slot, cfg):
            raise BudgetError(
                f"timestamp {slot_text(slot)!r} takes {len(slot_ids)} tokens, "
                f"the memory accounted {_allowed_text(slot, cfg)} for it"
            )
    return ids


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


def build_prompt(
    backend: LanguageBackend,
    slots: Sequence[Slot],
    question: str,
    cfg: PromptConfig,
    budget: int | None = None,
    gaps: Sequence[tuple[float, float]] = (),
) -> Prompt:
    """Assemble ``inputs_embeds`` [1, L, H] for ``question`` over ``slots`` (in memory order).

    ``gaps``: (start, end) spans in slot time where the source showed nothing; each becomes a note
    (``gap_text``) in time order among the slots, so the model knows the camera saw nothing then.

    Raises EmptyMemory without slots, BudgetError when a timestamp exceeds the text reserve or
    the layout exceeds ``budget`` (when given).
    """
    check_layout(slots, cfg, budget)
    tok = backend.tokenizer
    before, after = render_chat(tok, question, cfg)
    text_ids = count_slot_text(tok, slots, cfg)
    note_ids = [_ids(tok, n) if n else [] for n in _gap_notes(slots, gaps)]
    text_ids = [n + t for n, t in zip(note_ids, text_ids, strict=False)]
    pre_ids, post_ids = _ids(tok, before), note_ids[-1] + _ids(tok, after)

    # One embedding lookup for every text piece, one transfer for every visual token.
    lm = backend.lm
    all_ids = [*pre_ids, *(i for ids in text_ids for i in ids), *post_ids]
    ids_t = torch.tensor(all_ids, dtype=torch.long, device=backend.device)
    with torch.no_grad():
        text_emb = lm.get_input_embeddings()(ids_t)
    flat = [np.asarray(s.tokens).reshape(s.side * s.side, -1) for s in slots]
    visual = backend.to_llm_embeds(np.concatenate(flat))
    vis = torch.from_numpy(np.ascontiguousarray(visual)).to(backend.device, backend.dtype)
    newline = torch.from_numpy(np.ascontiguousarray(backend.image_newline)).to(backend.device, backend.dtype)

    pieces = [text_emb[: len(pre_ids)]]
    t_at, v_at = len(pre_ids), 0
    for ids, grid in zip(text_ids, flat, strict=True):
        pieces += [text_emb[t_at : t_at + len(ids)], vis[v_at : v_at + len(grid)]]
        t_at, v_at = t_at + len(ids), v_at + len(grid)
    pieces += [newline[None], text_emb[t_at:]]
    embeds = torch.cat(pieces)[None]
    return Prompt(
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=backend.device),
        visual_tokens=v_at,
        text_tokens_per_slot=tuple(len(ids) - len(n) for ids, n in zip(text_ids, note_ids, strict=False)),
        prompt_tokens=int(embeds.shape[1]),
        gap_tokens=sum(len(n) for n in note_ids),
    )


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
