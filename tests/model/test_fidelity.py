"""Acceptance: our encode -> store -> assemble path equals transformers' own LLaVA-OV video path.

At native 14x14 pooling and without timestamps, the logits of the prompt we assemble from
stored slots must equal ``LlavaOnevisionForConditionalGeneration(input_ids, pixel_values_videos)``
on the same frames, and greedy decoding must pick the same tokens. LLaVA-Video
(``llava-hf/LLaVA-Video-7B-Qwen2-hf``) is the same class: a tiny checkpoint in its layout (features from
the tower's penultimate layer, as LLaVA-Video's ``mm_vision_select_layer -2``) passes the same test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

from model.answerer import AnswerConfig, Answerer
from model.backend import LoadConfig
from model.llava_ov import LlavaOVBackend
from model.prompt import PromptConfig
from model.slots import Slot

QUESTION = "What colour is the car at the start?"
NEW_TOKENS = 12


def _stored_slots(backend: LlavaOVBackend, frames: np.ndarray) -> list[Slot]:
    """Encode, then round-trip through float32 bytes as the Redis memory stores tokens."""
    tokens = backend.encode(frames)
    blob = tokens.astype(np.float32).tobytes()
    stored = np.frombuffer(blob, np.float32).reshape(tokens.shape)
    side = backend.s_max
    return [Slot(i, float(i), float(i), i, i, side, stored[i]) for i in range(len(frames))]


def _reference_inputs(backend: LlavaOVBackend, frames: np.ndarray) -> dict[str, torch.Tensor]:
    """What LlavaOnevisionProcessor would produce: the prompt with <video> expanded to F*196+1 ids."""
    tok = backend.tokenizer
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    video_id = backend.model.config.video_token_id
    at = ids.index(video_id)
    n_video = len(frames) * backend.s_max**2 + 1
    ids = ids[:at] + [video_id] * n_video + ids[at + 1 :]
    input_ids = torch.tensor([ids])
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": backend.preprocess(frames)[None],
    }


@pytest.fixture(scope="module")
def llava_video(
    tiny_path: str, tiny_backend: LlavaOVBackend, frames: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> LlavaOVBackend:
    """A tiny checkpoint in LLaVA-Video's layout: the tiny preset with vision_feature_layer -2."""
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_path)
    model.config.vision_feature_layer = -2
    out = tmp_path_factory.mktemp("llava_video") / "ckpt"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(out)
    shutil.copy(Path(tiny_path) / "preprocessor_config.json", out)
    backend = LlavaOVBackend(LoadConfig(model=str(out), device="cpu", dtype="float32"))
    assert backend.model.config.vision_feature_layer == -2 and backend.info.family == "llava-ov"
    assert backend.info.fingerprint != tiny_backend.info.fingerprint
    assert not np.allclose(
        backend.encode(frames[:1]), tiny_backend.encode(frames[:1])
    )  # another layer's features
    return backend


@pytest.fixture(params=["float32", "bfloat16", "llava-video"])
def backend(
    request: pytest.FixtureRequest,
    tiny_backend: LlavaOVBackend,
    tiny_cache: Path,
    llava_video: LlavaOVBackend,
) -> LlavaOVBackend:
    if request.param == "float32":
        return tiny_backend
    if request.param == "llava-video":
        return llava_video
    return LlavaOVBackend(LoadConfig(model="tiny", cache_dir=tiny_cache, device="cpu", dtype=request.param))


def test_logits_match_transformers_video_path(backend: LlavaOVBackend, frames: np.ndarray) -> None:
    model = backend.model
    clip = frames[:3]
    prompt = backend.build_prompt(_stored_slots(backend, clip), QUESTION, PromptConfig(timestamps=False))
    ref_inputs = _reference_inputs(backend, clip)
    assert prompt.prompt_tokens == ref_inputs["input_ids"].shape[1]
    assert prompt.visual_tokens == 3 * 196 and prompt.text_tokens_per_slot == (0, 0, 0)
    with torch.inference_mode():
        reference = model(**ref_inputs).logits
        ours = model(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask).logits
    diff = float((reference - ours).abs().max())
    print(f"fidelity ({backend.dtype}): max |logit difference| = {diff:.3g} over {tuple(ours.shape)}")
    assert diff <= 1e-5


def test_greedy_tokens_match_transformers_video_path(
    tiny_backend: LlavaOVBackend, frames: np.ndarray
) -> None:
    model = tiny_backend.model
    clip = frames[:3]
    slots = _stored_slots(tiny_backend, clip)
    ref_inputs = _reference_inputs(tiny_backend, clip)
    with torch.inference_mode():
        ref = model.generate(**ref_inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    ref_new = ref[0, ref_inputs["input_ids"].shape[1] :].tolist()
    prompt = tiny_backend.build_prompt(slots, QUESTION, PromptConfig(timestamps=False))
    with torch.inference_mode():
        ours = model.generate(
            inputs_embeds=prompt.inputs_embeds,
            attention_mask=prompt.attention_mask,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    assert ours[0].tolist() == ref_new
    assert len(set(ref_new)) > 1  # the tiny preset says something, not one repeated token
    answerer = Answerer(tiny_backend, PromptConfig(timestamps=False), AnswerConfig(max_new_tokens=NEW_TOKENS))
    answer = answerer.answer(slots, QUESTION, budget=3 * 196)
    assert answer.text == tiny_backend.tokenizer.decode(ref_new, skip_special_tokens=True)
