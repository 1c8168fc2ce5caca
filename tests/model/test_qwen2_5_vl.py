"""The Qwen2.5-VL backend on the tiny preset (CPU, fp32): fidelity against transformers' own video
path, M-RoPE positions against ``get_rope_index``, generation, label accounting, presets."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from model.answerer import AnswerConfig, Answerer
from model.backend import LoadConfig
from model.backends import load_backend
from model.compressor import BudgetError, plan_sides
from model.presets_qwen25 import CHAT_TEMPLATE, CLIP_MEAN, CLIP_STD, preset_config
from model.prompt import Prompt, PromptConfig, gap_text, render_chat, slot_label
from model.qwen2_5_vl import PLACEHOLDER, S_MAX, Qwen25VLBackend, patchify
from model.slots import Slot

QUESTION = "What happens in the video?"
BUDGET = 2048


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("presets")


@pytest.fixture(scope="module")
def backend(cache_dir: Path) -> Qwen25VLBackend:
    """The tiny preset in fp32, built into a fresh cache, loaded through ``load_backend`` (shared)."""
    cfg = LoadConfig(model="tiny-qwen2.5-vl", cache_dir=cache_dir, device="cpu", dtype="float32")
    loaded = load_backend(cfg)
    assert isinstance(loaded, Qwen25VLBackend)
    return loaded


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """[3, 448, 448, 3] uint8 at the native size: smooth random colour fields."""
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (3, 14, 14, 3)).astype(np.uint8)
    return np.repeat(np.repeat(small, 32, axis=1), 32, axis=2)


@pytest.fixture(scope="module")
def tokens(backend: Qwen25VLBackend, frames: np.ndarray) -> np.ndarray:
    return backend.encode(frames)


def make_slots(backend: Qwen25VLBackend, tokens: np.ndarray, sides: list[int]) -> list[Slot]:
    """One slot per side (an hour apart), pooled from the encoded frames, stored as float32."""
    slots = []
    for i, side in enumerate(sides):
        grid = backend.pool(tokens[i % len(tokens)], side) if side != S_MAX else tokens[i % len(tokens)]
        t = 5.0 + 3600.0 * i
        text = backend.label_tokens([t])[0]
        slots.append(Slot(i, t, t, i, i, side, np.asarray(grid, np.float32), text_tokens=text))
    return slots


def reference_ids(
    backend: Qwen25VLBackend,
    slots: list[Slot],
    cfg: PromptConfig,
    gaps: list[tuple[float, float]] | None = None,
) -> torch.Tensor:
    """[1, L]: the prompt as transformers' processor would write it, one 1-patch video per slot
    (``<|vision_start|><|video_pad|>*s*s<|vision_end|>``), time labels and gap notes as text."""
    before, after = render_chat(backend.tokenizer, QUESTION, cfg, PLACEHOLDER)
    text, notes = before, dict.fromkeys(range(len(slots) + 1), "")
    for a, b in gaps or []:
        at = next((i for i, s in enumerate(slots) if s.t0 >= b), len(slots))
        notes[at] += gap_text(a, b)
    for i, slot in enumerate(slots):
        label = slot_label(slot.t0) if cfg.timestamps else ""
        text += notes[i] + label + "<|vision_start|>" + "<|video_pad|>" * slot.n_tokens + "<|vision_end|>"
    text += notes[len(slots)] + after
    return backend.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def reference_inputs(
    backend: Qwen25VLBackend, frames: np.ndarray, slots: list[Slot], cfg: PromptConfig
) -> dict:
    """transformers' own video inputs: ids, the image processor's patches of each frame (duplicated in
    time) as ``pixel_values_videos``, one ``video_grid_thw`` row [1, 32, 32] per slot."""
    ids = reference_ids(backend, slots, cfg)
    proc = Qwen2VLImageProcessorPil(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    pixels = proc(images=list(frames[: len(slots)]), do_resize=False, return_tensors="pt")
    video_id = backend.model.config.video_token_id
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": pixels["pixel_values"],
        "video_grid_thw": pixels["image_grid_thw"],
        "second_per_grid_ts": torch.ones(len(slots)),
        "mm_token_type_ids": (ids == video_id).int() * 2,
    }


def our_logits(backend: Qwen25VLBackend, prompt: Prompt) -> torch.Tensor:
    with torch.no_grad():
        out = backend.model(
            inputs_embeds=prompt.inputs_embeds,
            attention_mask=prompt.attention_mask,
            position_ids=prompt.position_ids,
        )
    return out.logits


@pytest.mark.parametrize("timestamps", [False, True])
def test_logits_equal_transformers_video_path(
    backend: Qwen25VLBackend, frames: np.ndarray, tokens: np.ndarray, timestamps: bool
) -> None:
    """encode -> Slot (float32) -> build_prompt -> forward gives transformers' own logits, every position."""
    cfg = PromptConfig(timestamps=timestamps, text_tokens=12)
    slots = make_slots(backend, tokens, [S_MAX] * 3)
    prompt = backend.build_prompt(slots, QUESTION, cfg, BUDGET)
    ref = reference_inputs(backend, frames, slots, cfg)
    assert prompt.prompt_tokens == ref["input_ids"].shape[1]
    with torch.no_grad():
        expected = backend.model(**ref).logits
    got = our_logits(backend, prompt)
    diff = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"timestamps={timestamps}: largest logit difference {diff:.3g} (logits up to {scale:.3g})")
    assert diff <= 1e-5 * max(1.0, scale)  # 0.0 here: the same features, the same positions
    assert torch.equal(got[0, -1].argmax(), expected[0, -1].argmax())


def test_encode_equals_video_features(
    backend: Qwen25VLBackend, frames: np.ndarray, tokens: np.ndarray
) -> None:
    """Our tokens are the merger's output of transformers' video path, row-major [s, s, D]."""
    ref = reference_inputs(backend, frames, make_slots(backend, tokens, [S_MAX] * 3), PromptConfig())
    with torch.no_grad():
        out = backend.model.model.get_video_features(ref["pixel_values_videos"], ref["video_grid_thw"])
    expected = torch.stack(list(out.pooler_output)).reshape(3, S_MAX, S_MAX, -1).numpy()
    assert tokens.shape == (3, S_MAX, S_MAX, backend.dim)
    np.testing.assert_allclose(tokens, expected, rtol=0, atol=1e-6)


def test_patchify_equals_image_processor() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((2, 3, 56, 84)).astype(np.float32)
    ours = patchify(torch.from_numpy(pixels), 14, 2, 2)
    proc = Qwen2VLImageProcessorPil()
    expected = np.concatenate([proc.patchify(p, 14, 2, 2)[0] for p in pixels])
    np.testing.assert_array_equal(ours.numpy(), expected)


def test_positions_equal_get_rope_index(backend: Qwen25VLBackend, tokens: np.ndarray) -> None:
    """Pooled slots (sides < s_max), labels and a gap note between them: our position ids are
    ``get_rope_index``'s for the same prompt written as token ids, and the text row counts 0..L-1."""
    slots = make_slots(backend, tokens, [16, 9, 5, 2, 1])
    gaps = [(10.0, 3000.0), (7300.0, 7400.0)]  # notes before slots 1 and 3
    cfg = PromptConfig(text_tokens=12)
    prompt = backend.build_prompt(slots, QUESTION, cfg, BUDGET, gaps)
    ids = reference_ids(backend, slots, cfg, gaps)
    assert prompt.prompt_tokens == ids.shape[1]
    grid = torch.tensor([[1, 2 * s.side, 2 * s.side] for s in slots])
    mm = (ids == backend.model.config.video_token_id).int() * 2
    expected, _ = backend.model.model.get_rope_index(
        ids, mm, video_grid_thw=grid, second_per_grid_ts=torch.full((len(slots),), 0.5)
    )
    assert prompt.position_ids is not None
    assert prompt.position_ids.shape == (4, 1, ids.shape[1])
    assert torch.equal(prompt.position_ids[1:], expected)
    assert torch.equal(prompt.position_ids[0, 0], torch.arange(ids.shape[1]))
    with torch.no_grad():  # the text around the slots is embedded from exactly these ids
        text = mm[0] == 0
        assert prompt.inputs_embeds is not None
        embedded = backend.model.get_input_embeddings()(ids[0][text])
        assert torch.equal(prompt.inputs_embeds[0][text], embedded)


def test_generate_equals_transformers_generate(
    backend: Qwen25VLBackend, frames: np.ndarray, tokens: np.ndarray
) -> None:
    """Several greedy tokens through the Answerer (inputs_embeds + explicit positions) are the tokens
    of ``generate`` on transformers' own video inputs (which computes positions and rope_deltas)."""
    cfg = PromptConfig(timestamps=False)
    slots = make_slots(backend, tokens, [S_MAX] * 3)
    ref = reference_inputs(backend, frames, slots, cfg)
    with torch.no_grad():
        out = backend.model.generate(**ref, max_new_tokens=12, do_sample=False)
    expected = backend.tokenizer.decode(out[0, ref["input_ids"].shape[1] :], skip_special_tokens=True)
    answer = Answerer(backend, cfg, AnswerConfig(max_new_tokens=12)).answer(slots, QUESTION, BUDGET)
    assert answer.new_tokens == 12
    assert answer.text == expected


def test_answer_whole_and_stream_with_pooled_slots(backend: Qwen25VLBackend, tokens: np.ndarray) -> None:
    """Memory-planned sides (pooled down to 1): a whole answer and a streamed one, within the budget."""
    n = 40
    costs = backend.label_tokens([5.0 + 3600.0 * i for i in range(n)])
    sides = plan_sides(costs, 400, S_MAX)
    assert min(sides) < S_MAX
    slots = make_slots(backend, tokens, sides)
    answerer = Answerer(backend, PromptConfig(text_tokens=12), AnswerConfig(max_new_tokens=10))
    whole = answerer.answer(slots, QUESTION, 400)
    assert whole.text and whole.tokens_used <= 400
    assert whole.tokens_used == sum(s * s for s in sides) + sum(costs)
    with answerer.stream(slots, QUESTION, 400) as stream:
        pieces = list(stream)
    streamed = stream.result()
    assert "".join(pieces) == streamed.text == whole.text
    assert streamed.tokens_used == whole.tokens_used


def test_concurrent_answers_equal_sequential(backend: Qwen25VLBackend, tokens: np.ndarray) -> None:
    """Two requests on one model at once give their sequential answers: no shared rope_deltas."""
    answerer = Answerer(backend, PromptConfig(text_tokens=12), AnswerConfig(max_new_tokens=16))
    jobs = [
        (make_slots(backend, tokens, [16, 16]), "Who is there?"),
        (make_slots(backend, tokens, [4, 8, 2]), "Why?"),
    ]
    sequential = [answerer.answer(slots, q, BUDGET).text for slots, q in jobs]
    stale = torch.tensor([[1000]])  # what another request's transformers-computed positions would leave
    backend.model.model.rope_deltas = stale
    assert sequential[0] != sequential[1]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        slots, q = jobs[i]
        results[i] = answerer.answer(slots, q, BUDGET).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[0], results[1]] == sequential
    assert backend.model.model.rope_deltas is stale  # neither read nor written


@pytest.mark.parametrize("t0", [0.0, 59.0, 3600.0, 86399.0, 200_000.0, 7_000_000.0])
def test_label_tokens_count_what_build_prompt_writes(
    backend: Qwen25VLBackend, tokens: np.ndarray, t0: float
) -> None:
    [count] = backend.label_tokens([t0])
    slot = Slot(0, t0, t0, 0, 0, 4, backend.pool(tokens[0], 4), text_tokens=count)
    prompt = backend.build_prompt([slot], QUESTION, PromptConfig(text_tokens=12), BUDGET)
    assert prompt.text_tokens_per_slot == (count,)
    assert count <= 12  # the family default reserve holds the longest label with its two markers
    assert prompt.tokens_used == 16 + count


def test_without_timestamps_the_markers_are_counted(backend: Qwen25VLBackend, tokens: np.ndarray) -> None:
    slots = [Slot(i, i, i, i, i, 3, backend.pool(tokens[0], 3)) for i in range(4)]
    prompt = backend.build_prompt(slots, QUESTION, PromptConfig(timestamps=False), 4 * (9 + 2))
    assert prompt.text_tokens_per_slot == (2, 2, 2, 2)
    assert prompt.tokens_used == 4 * (9 + 2)
    with pytest.raises(BudgetError):
        backend.build_prompt(slots, QUESTION, PromptConfig(timestamps=False), 4 * 9 + 7)


def test_info(backend: Qwen25VLBackend) -> None:
    info = backend.info
    assert (info.family, info.s_max, info.dim, info.width, info.levels) == ("qwen2.5-vl", 16, 64, 64, 1)
    assert (info.pool_space, info.positions, info.image_size) == ("llm", "mrope", 448)
    assert info.fingerprint.startswith("qwen2.5-vl:")
    assert backend.norm.mean == pytest.approx(CLIP_MEAN) and backend.norm.std == pytest.approx(CLIP_STD)


def test_7b_preset_has_the_real_sizes(backend: Qwen25VLBackend) -> None:
    """``random-qwen2.5-vl-7b``'s config (built on the meta device: no weights) has Qwen2.5-VL-7B's
    8.29B parameters and token ids; the tokenizer's special tokens have those ids."""
    tok = backend.tokenizer  # the presets' tokenizer: Qwen's vocabulary, Qwen2.5's specials
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.chat_template == CHAT_TEMPLATE
    config = preset_config("random-qwen2.5-vl-7b", tok)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    vision, text = config.vision_config, config.text_config
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 3584)  # type: ignore[union-attr]
    assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31]  # type: ignore[union-attr]
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]  # type: ignore[union-attr, index]
    assert (text.vocab_size, text.num_hidden_layers, text.num_key_value_heads) == (152064, 28, 4)  # type: ignore[union-attr]
    ids = (config.image_token_id, config.video_token_id, config.vision_start_token_id)
    assert ids == (151655, 151656, 151652)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}], tokenize=False
    )
    assert PLACEHOLDER + "Q<|im_end|>" in rendered
