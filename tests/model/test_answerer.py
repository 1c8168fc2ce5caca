"""Prompt assembly, token accounting, streaming and timing of the answerer (tiny preset, CPU)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import VidmemError
from model.answerer import AnswerConfig, Answerer
from model.compressor import BudgetError, pool
from model.llava_ov import LlavaOVBackend
from model.prompt import LABEL_COLON, EmptyMemory, PromptConfig, gap_text, render_chat, slot_label
from model.slots import Slot

QUESTION = "How many people are in the room?"


@pytest.fixture(scope="module")
def slots(tiny_backend: LlavaOVBackend, frames: np.ndarray) -> list[Slot]:
    """Four slots at mixed sides (14, 7, 3, 1), as a memory under compression holds them."""
    tokens = tiny_backend.encode(frames)
    times = [0.0, 12.4, 3605.0, 250_000.0]
    return [
        Slot(i, t, t + 1, i, i, side, pool(tokens[i], side))
        for i, (t, side) in enumerate(zip(times, [14, 7, 3, 1], strict=True))
    ]


def _ids(backend: LlavaOVBackend, text: str) -> list[int]:
    return list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_slot_labels() -> None:
    assert [slot_label(t) for t in (0, 12.7, 3605, 99_999.9)] == ["0s", "12s", "3605s", "99999s"]
    assert slot_label(100_020) == "1667m" and slot_label(6_000_000) == "1666h"
    assert LABEL_COLON.before(42.0) == "42s: "


def test_prompt_layout_and_accounting(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    cfg = PromptConfig(timestamps=True, text_tokens=8)
    prompt = tiny_backend.build_prompt(slots, QUESTION, cfg, budget=400)
    before, after = render_chat(tiny_backend.tokenizer, QUESTION, cfg, "<video>")
    pre, post = _ids(tiny_backend, before), _ids(tiny_backend, after)
    texts = [_ids(tiny_backend, LABEL_COLON.before(s.t0)) for s in slots]
    assert prompt.text_tokens_per_slot == tuple(len(t) for t in texts)
    assert prompt.visual_tokens == 196 + 49 + 9 + 1
    assert prompt.tokens_used == prompt.visual_tokens + sum(len(t) for t in texts)
    assert prompt.prompt_tokens == len(pre) + prompt.tokens_used + 1 + len(post)
    assert prompt.inputs_embeds.shape == (1, prompt.prompt_tokens, tiny_backend.dim)
    assert prompt.attention_mask.shape == (1, prompt.prompt_tokens) and bool(prompt.attention_mask.all())

    # Row by row: prefix text, then per slot its timestamp text and its tokens, newline, suffix.
    emb = tiny_backend.model.get_input_embeddings()
    rows = prompt.inputs_embeds[0]
    at = 0

    def take(n: int) -> torch.Tensor:
        nonlocal at
        at += n
        return rows[at - n : at]

    with torch.inference_mode():
        assert torch.equal(take(len(pre)), emb(torch.tensor(pre)))
        for slot, text in zip(slots, texts, strict=True):
            assert torch.equal(take(len(text)), emb(torch.tensor(text)))
            assert torch.equal(take(slot.n_tokens), torch.from_numpy(slot.tokens.reshape(slot.n_tokens, -1)))
        assert torch.equal(take(1)[0], torch.from_numpy(tiny_backend.image_newline))
        assert torch.equal(take(len(post)), emb(torch.tensor(post)))
    assert at == prompt.prompt_tokens


def test_budget_errors(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    with pytest.raises(BudgetError, match=r"takes \d+ tokens, the memory accounted 3 for it"):
        tiny_backend.build_prompt(slots, QUESTION, PromptConfig(text_tokens=3))
    cost = 196 + 49 + 9 + 1 + 4 * 8
    with pytest.raises(BudgetError, match=f"cost {cost} tokens, the budget is {cost - 1}"):
        tiny_backend.build_prompt(slots, QUESTION, PromptConfig(text_tokens=8), budget=cost - 1)
    tiny_backend.build_prompt(slots, QUESTION, PromptConfig(text_tokens=8), budget=cost)
    with pytest.raises(EmptyMemory):
        tiny_backend.build_prompt([], QUESTION, PromptConfig())
    with pytest.raises(EmptyMemory):
        Answerer(tiny_backend, PromptConfig()).stream([], QUESTION, budget=100)


def test_empty_memory_is_a_vidmem_error_and_a_value_error() -> None:
    e = EmptyMemory("nothing yet")
    assert isinstance(e, VidmemError) and isinstance(e, ValueError)
    assert (e.code, e.status, str(e)) == ("empty_memory", 409, "nothing yet")


def test_streaming_matches_the_plain_answer(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    answerer = Answerer(tiny_backend, PromptConfig(text_tokens=8), AnswerConfig(max_new_tokens=24))
    plain = answerer.answer(slots, QUESTION, budget=400)
    stream = answerer.stream(slots, QUESTION, budget=400)
    pieces = list(stream)
    streamed = stream.result()
    assert len(pieces) > 1 and "".join(pieces) == plain.text == streamed.text
    assert plain.text.strip()
    for answer in (plain, streamed):
        assert 0 < answer.ttft_s <= answer.total_s
        assert answer.new_tokens == plain.new_tokens > 1
        assert (answer.budget, answer.slots_used) == (400, 4)
        assert answer.tokens_used == tiny_backend.build_prompt(slots, QUESTION, PromptConfig()).tokens_used
        assert answer.prompt_tokens > answer.tokens_used


class _FailingEngine:
    """An engine whose generation fails (to see errors cross the thread)."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("generation blew up")


def test_stream_reraises_generation_errors(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    answerer = Answerer(tiny_backend, PromptConfig(), engine=_FailingEngine())
    stream = answerer.stream(slots, QUESTION, budget=400)
    with pytest.raises(RuntimeError, match="blew up"):
        list(stream)
    with pytest.raises(RuntimeError, match="not been consumed"):
        stream.result()


def test_string_only_chat_templates_get_the_same_layout(tiny_backend: LlavaOVBackend) -> None:
    tok = copy.deepcopy(tiny_backend.tokenizer)
    tok.chat_template = (  # a plain Qwen2-style template: content must be a string
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    assert render_chat(tok, QUESTION, PromptConfig(), "<video>") == render_chat(
        tiny_backend.tokenizer, QUESTION, PromptConfig(), "<video>"
    )
    before, after = render_chat(tok, QUESTION, PromptConfig(system=None), "<video>")
    assert before == "<|im_start|>user\n" and after.startswith("\n" + QUESTION)


def test_closing_a_stream_stops_generation(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    answerer = Answerer(tiny_backend, PromptConfig(), AnswerConfig(max_new_tokens=2000))
    with answerer.stream(slots, QUESTION, budget=400) as stream:
        first = next(stream)
        assert first
    assert stream.new_tokens < 2000
    with pytest.raises(RuntimeError, match="not been consumed"):
        stream.result()


def test_gaps_are_noted_in_time_order(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    """A gap's note goes before the first slot after it (one after the last slot goes after the video);
    the memory's accounting is unchanged and the notes' tokens are counted apart."""
    cfg = PromptConfig(timestamps=True, text_tokens=8)
    plain = tiny_backend.build_prompt(slots, QUESTION, cfg, budget=400)
    gaps = [(1.0, 12.0), (300_000.0, 300_050.0), (5.0, 6.0)]
    prompt = tiny_backend.build_prompt(slots, QUESTION, cfg, budget=400, gaps=gaps)
    notes = ["(no video 1s-12s) (no video 5s-6s) ", "(no video 5000m-5000m) "]
    assert gap_text(1.0, 12.0) == "(no video 1s-12s) "
    assert prompt.gap_tokens == sum(len(_ids(tiny_backend, n)) for n in notes) > 0
    assert prompt.tokens_used == plain.tokens_used
    assert prompt.text_tokens_per_slot == plain.text_tokens_per_slot
    assert prompt.prompt_tokens == plain.prompt_tokens + prompt.gap_tokens

    # The first note sits right after the prefix text, before slot 1's timestamp (slot 1 starts at 12.4 s).
    before, _ = render_chat(tiny_backend.tokenizer, QUESTION, cfg, "<video>")
    pre = _ids(tiny_backend, before)
    at = len(pre) + len(_ids(tiny_backend, LABEL_COLON.before(slots[0].t0))) + slots[0].n_tokens
    first = _ids(tiny_backend, notes[0])
    with torch.inference_mode():
        want = tiny_backend.model.get_input_embeddings()(torch.tensor(first))
    assert torch.equal(prompt.inputs_embeds[0, at : at + len(first)], want)


def test_should_stop_ends_the_generation_early(tiny_backend: LlavaOVBackend, slots: list[Slot]) -> None:
    """A stream whose should_stop turns True stops generating (within stop_poll_s) and says so."""
    answerer = Answerer(tiny_backend, PromptConfig(), AnswerConfig(max_new_tokens=2000, stop_poll_s=0.0))
    pieces = 0
    with answerer.stream(slots, QUESTION, budget=400, should_stop=lambda: pieces >= 3) as stream:
        for _ in stream:
            pieces += 1
        result = stream.result()
    assert stream.stopped_early
    assert 3 <= pieces < 50 and result.new_tokens < 2000
    with answerer.stream(slots, QUESTION, budget=400, should_stop=lambda: False) as plain:
        list(plain)
    assert not plain.stopped_early
