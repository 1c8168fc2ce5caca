"""Qwen3VLBackend on the tiny preset: fidelity to transformers' own video path (DeepStack included),
M-RoPE positions, labels, pooled sides, and answers (whole, streamed, concurrent)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from model.answerer import AnswerConfig, Answerer
from model.backend import Backend, LoadConfig
from model.backends import load_backend
from model.compressor import BudgetError
from model.prompt import Prompt, PromptConfig
from model.qwen3_vl import Qwen3VLBackend
from model.qwen3_vl_prompt import qwen3_label
from model.slots import Slot

QUESTION = "What happens in the video?"
TIMES = (0.0, 5.0, 3600.0, 86399.0)
CFG = PromptConfig(text_tokens=12)
KEEP = {"logits_to_keep": 64, "output_hidden_states": True}
"""Compared: every decoder layer's hidden states at every position, and the logits of the last 64
positions (the full [L, 151669] logits of a 1000-token prompt cost 2 s and 650 MB each)."""


@pytest.fixture(scope="module")
def backend(tiny_cache: Path) -> Qwen3VLBackend:
    """The tiny Qwen3-VL preset on the CPU in fp32 (shared: tests must not modify it)."""
    loaded = load_backend(
        LoadConfig(model="tiny-qwen3-vl", cache_dir=tiny_cache, device="cpu", dtype="float32")
    )
    assert isinstance(loaded, Qwen3VLBackend)
    return loaded


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """[4, 512, 512, 3] uint8: smooth random colour fields."""
    rng = np.random.default_rng(11)
    small = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    return np.repeat(np.repeat(small, 32, axis=1), 32, axis=2)


@pytest.fixture(scope="module")
def tokens(backend: Qwen3VLBackend, clip: np.ndarray) -> np.ndarray:
    return backend.encode(clip)


def native_slots(backend: Qwen3VLBackend, tokens: np.ndarray, times: tuple[float, ...] = TIMES) -> list[Slot]:
    labels = backend.label_tokens(times)
    return [Slot(i, t, t, i, i, 16, tokens[i].astype(np.float32), labels[i]) for i, t in enumerate(times)]


def native_inputs(
    backend: Qwen3VLBackend, clip: np.ndarray, times: tuple[float, ...]
) -> dict[str, torch.Tensor]:
    """transformers' own video inputs for the frames: the processor's text layout (one
    ``<t seconds><|vision_start|>…<|vision_end|>`` per temporal patch, in place of the template's video
    item, the whole text tokenized at once), each frame duplicated in time, one grid row per patch."""
    tok = backend.tokenizer
    pads = "<|video_pad|>" * 256
    video = "".join(f"{qwen3_label(t)}<|vision_start|>{pads}<|vision_end|>" for t in times)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", video)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    pixels, grid = backend.pixel_values(clip[: len(times)])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": pixels,
        "video_grid_thw": grid,
        "mm_token_type_ids": (ids == backend.video_token_id).long() * 2,
    }


def prompt_inputs(prompt: Prompt) -> dict[str, object]:
    assert prompt.input_ids is not None and prompt.position_ids is not None
    return {
        "input_ids": prompt.input_ids,
        "attention_mask": prompt.attention_mask,
        "position_ids": prompt.position_ids,
        **prompt.model_kwargs,
    }


def test_info_and_shapes(backend: Qwen3VLBackend, clip: np.ndarray, tokens: np.ndarray) -> None:
    info = backend.info
    assert isinstance(backend, Backend)
    assert (info.family, info.s_max, info.width, info.levels, info.dim) == ("qwen3-vl", 16, 64, 3, 192)
    assert (info.pool_space, info.positions, info.image_size) == ("llm", "mrope", 512)
    assert tokens.shape == (4, 16, 16, 192) and tokens.dtype == np.float32 and np.isfinite(tokens).all()
    assert backend.encode(clip[:0]).shape == (0, 16, 16, 192)
    other = np.ascontiguousarray(clip[:1, :300, :400])
    assert backend.encode(other).shape == (1, 16, 16, 192)
    with pytest.raises(ValueError, match="uint8"):
        backend.encode(clip.astype(np.float32))


def test_pixels_are_the_video_processors_patches(backend: Qwen3VLBackend, clip: np.ndarray) -> None:
    """Each frame duplicated in time and flattened by the video processor's own ``patchify``."""
    pixels, grid = backend.pixel_values(clip[:2])
    normalised = (torch.from_numpy(clip[:2]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    video = normalised[:, None].expand(2, 2, 3, 512, 512)
    patches = [Qwen3VLVideoProcessor.patchify(None, v[None], 16, 2, 2) for v in video]
    assert all(p[1:] == (1, 32, 32) for p in patches)
    expected = torch.cat([p[0][0] for p in patches])
    torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-6)
    assert grid.tolist() == [[1, 32, 32], [1, 32, 32]]


def test_encode_stacks_main_grid_and_deepstack(
    backend: Qwen3VLBackend, clip: np.ndarray, tokens: np.ndarray
) -> None:
    with torch.inference_mode():
        out = backend.model.model.get_video_features(*backend.pixel_values(clip[:2]), return_dict=True)
    main, deep = torch.cat(out.pooler_output), [torch.cat(f) for f in out.deepstack_features]
    assert len(deep) == 2
    stored = torch.from_numpy(tokens[:2].reshape(512, 192))
    levels = backend.llm_levels(stored.numpy())
    for got, want in zip(levels, [main, *deep], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(backend.to_llm_embeds(stored.numpy()), main, rtol=0, atol=1e-6)


def test_fidelity_with_transformers_video_path(
    backend: Qwen3VLBackend, clip: np.ndarray, tokens: np.ndarray
) -> None:
    """encode -> store (float32 Slot) -> build_prompt -> forward == transformers' own path."""
    prompt = backend.build_prompt(native_slots(backend, tokens), QUESTION, CFG, budget=2048)
    native = native_inputs(backend, clip, TIMES)
    assert torch.equal(prompt.input_ids, native["input_ids"])
    assert torch.equal(prompt.model_kwargs["mm_token_type_ids"], native["mm_token_type_ids"])
    assert torch.equal(prompt.model_kwargs["video_grid_thw"], native["video_grid_thw"])
    with torch.inference_mode():
        ours = backend.model(**prompt_inputs(prompt), **KEEP)
        backend.model.model.rope_deltas = None
        theirs = backend.model(**native, **KEEP)
    hidden = max(
        (a - b).abs().max().item() for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True)
    )
    logits = (ours.logits - theirs.logits).abs().max().item()
    assert hidden < 1e-6 and logits < 1e-6, f"largest differences: hidden {hidden}, logits {logits}"


def test_positions_equal_get_rope_index_at_every_side(backend: Qwen3VLBackend, tokens: np.ndarray) -> None:
    """Every side 1..16 in one prompt, with a gap note: our positions are get_rope_index's, and the
    model takes the prompt."""
    slots = [
        Slot(i, 10.0 * i, 10.0 * i, i, i, side, backend.pool(tokens[i % 4], side), 12)
        for i, side in enumerate(range(1, 17))
    ]
    prompt = backend.build_prompt(slots, QUESTION, CFG, gaps=[(42.0, 47.0)])
    assert prompt.input_ids is not None and prompt.position_ids is not None
    rope, _ = backend.model.model.get_rope_index(
        prompt.input_ids,
        prompt.model_kwargs["mm_token_type_ids"],
        video_grid_thw=prompt.model_kwargs["video_grid_thw"],
        attention_mask=prompt.attention_mask,
    )
    assert torch.equal(prompt.position_ids[1:], rope)
    assert torch.equal(prompt.position_ids[0, 0], torch.arange(prompt.prompt_tokens))
    assert prompt.visual_tokens == sum(s * s for s in range(1, 17)) and prompt.gap_tokens > 0
    with torch.inference_mode():
        logits = backend.model(**prompt_inputs(prompt), logits_to_keep=1).logits
    assert torch.isfinite(logits).all()


def test_deepstack_reaches_the_model(backend: Qwen3VLBackend, tokens: np.ndarray) -> None:
    zeroed = tokens.copy()
    zeroed[..., 64:] = 0.0
    with torch.inference_mode():
        logits = [
            backend.model(
                **prompt_inputs(backend.build_prompt(native_slots(backend, t), QUESTION, CFG)), **KEEP
            ).logits
            for t in (tokens, zeroed)
        ]
    # The tiny LLM's residual stream is large (lm_scale 20), so DeepStack moves logits by ~2e-3:
    # over 100x the fidelity tolerance above.
    assert (logits[0] - logits[1]).abs().max().item() > 1e-3


def test_generate_matches_transformers_and_ignores_rope_deltas(
    backend: Qwen3VLBackend, clip: np.ndarray, tokens: np.ndarray
) -> None:
    """Several greedy tokens equal transformers' own generate; the shared rope_deltas, set to
    garbage, is neither read nor written by ours."""
    times = TIMES[:2]
    prompt = backend.build_prompt(native_slots(backend, tokens[:2], times), QUESTION, CFG)
    native = native_inputs(backend, clip, times)
    n = native["input_ids"].shape[1]
    backend.model.model.rope_deltas = None
    theirs = backend.model.generate(**native, max_new_tokens=6, do_sample=False)[0, n:]
    garbage = torch.tensor([[12345]])
    backend.model.model.rope_deltas = garbage
    ours = backend.model.generate(**prompt_inputs(prompt), max_new_tokens=6, do_sample=False)[0, n:]
    assert backend.model.model.rope_deltas is garbage
    backend.model.model.rope_deltas = None
    assert ours.tolist() == theirs.tolist() and len(ours) == 6


def test_labels_count_what_the_prompt_writes(backend: Qwen3VLBackend, tokens: np.ndarray) -> None:
    times = (5.0, 3600.0, 86399.0, 123456.0, 7_000_000.0)
    assert [qwen3_label(t) for t in times[:2]] == ["<5 seconds>", "<3600 seconds>"]
    assert qwen3_label(123456.0) == "<2057 minutes>" and qwen3_label(7_000_000.0) == "<1944 hours>"
    counts = backend.label_tokens(times)
    assert counts == [6, 9, 10, 9, 9]
    slots = [
        Slot(i, t, t, i, i, 2, backend.pool(tokens[0], 2), c)
        for i, (t, c) in enumerate(zip(times, counts, strict=True))
    ]
    prompt = backend.build_prompt(slots, QUESTION, CFG)
    assert list(prompt.text_tokens_per_slot) == counts
    assert prompt.tokens_used == 5 * 4 + sum(counts)
    bare = backend.build_prompt(slots, QUESTION, PromptConfig(timestamps=False))
    assert bare.text_tokens_per_slot == (2,) * 5, "the vision markers stay without timestamps"
    assert prompt.input_ids is not None and bare.input_ids is not None
    assert int((bare.input_ids == backend.tokenizer.convert_tokens_to_ids("<|vision_start|>")).sum()) == 5
    short = [Slot(0, 3600.0, 3600.0, 0, 0, 2, backend.pool(tokens[0], 2), 8)]
    with pytest.raises(BudgetError, match="9 tokens"):
        backend.build_prompt(short, QUESTION, CFG)


def pooled_slots(backend: Qwen3VLBackend, tokens: np.ndarray, side: int, n: int = 6) -> list[Slot]:
    times = [7.0 * i for i in range(n)]
    labels = backend.label_tokens(times)
    return [
        Slot(i, t, t, i, i, side, backend.pool(tokens[i % 4], side), labels[i]) for i, t in enumerate(times)
    ]


def test_answers_whole_streamed_and_concurrent(backend: Qwen3VLBackend, tokens: np.ndarray) -> None:
    budget = 512
    answerer = Answerer(backend, CFG, AnswerConfig(max_new_tokens=5))
    sets = {side: pooled_slots(backend, tokens, side) for side in (1, 4, 8)}
    sequential = {}
    for side, slots in sets.items():
        answer = answerer.answer(slots, QUESTION, budget)
        assert answer.tokens_used <= budget and answer.new_tokens == 5 and answer.text
        sequential[side] = answer.text
    with answerer.stream(sets[4], QUESTION, budget) as stream:
        pieces = list(stream)
    assert "".join(pieces) == sequential[4] == stream.result().text
    results: dict[int, str] = {}

    def ask(side: int) -> None:
        results[side] = answerer.answer(sets[side], QUESTION, budget).text

    threads = [threading.Thread(target=ask, args=(side,)) for side in (1, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {1: sequential[1], 8: sequential[8]}
    assert len(set(sequential.values())) > 1, "greedy answers should depend on the memory"


def test_budget_is_enforced(backend: Qwen3VLBackend, tokens: np.ndarray) -> None:
    slots = pooled_slots(backend, tokens, 8)
    with pytest.raises(BudgetError, match="budget"):
        backend.build_prompt(slots, QUESTION, CFG, budget=6 * 64)


def tiny_qwen35(out: Path, backend: Qwen3VLBackend) -> None:
    """A tiny Qwen3.5 checkpoint (no DeepStack, a Gated DeltaNet layer and a full-attention layer)
    with Qwen3-VL's tokenizer and vision token ids."""
    rope = {"rope_type": "default", "rope_theta": 1e7, "mrope_section": [2, 1, 1], "mrope_interleaved": True}
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "layer_types": ["linear_attention", "full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "vocab_size": len(backend.tokenizer),
        "rope_parameters": {**rope, "partial_rotary_factor": 0.25},
    }
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
    ids = {k: getattr(backend.model.config, k) for k in ("image_token_id", "video_token_id")}
    ids |= {k: getattr(backend.model.config, k) for k in ("vision_start_token_id", "vision_end_token_id")}
    config = Qwen3_5Config(text_config=text, vision_config={**vision, "num_position_embeddings": 1024}, **ids)
    torch.manual_seed(0)
    Qwen3_5ForConditionalGeneration(config).save_pretrained(out)
    backend.tokenizer.save_pretrained(out)


def test_qwen35_loads_and_matches_transformers(
    backend: Qwen3VLBackend, clip: np.ndarray, tmp_path: Path
) -> None:
    """Qwen3.5 has the same vision scheme and prompt without DeepStack: one level, exact logits."""
    tiny_qwen35(tmp_path / "qwen35", backend)
    q35 = Qwen3VLBackend(LoadConfig(model=str(tmp_path / "qwen35"), device="cpu", dtype="float32"))
    assert (q35.info.family, q35.info.levels, q35.info.dim) == ("qwen3.5", 1, 64)
    times = TIMES[:2]
    encoded = q35.encode(clip[:2])
    labels = q35.label_tokens(times)
    slots = [Slot(i, t, t, i, i, 16, encoded[i], labels[i]) for i, t in enumerate(times)]
    prompt = q35.build_prompt(slots, QUESTION, CFG)
    native = native_inputs(q35, clip, times)
    assert torch.equal(prompt.input_ids, native["input_ids"])
    with torch.inference_mode():
        ours = q35.model(**prompt_inputs(prompt), logits_to_keep=64).logits
        theirs = q35.model(**native, logits_to_keep=64).logits
    assert (ours - theirs).abs().max().item() < 1e-6
