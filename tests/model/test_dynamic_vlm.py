"""Dynamic-VLM: the checkpoint layout, fidelity to an independent forward of the paper, and answers.

There is no transformers class for Dynamic-VLM, so fidelity is checked against ``paper_logits``, a plain
reimplementation of the paper's forward written here from the paper and LLaVA (CLIP hidden_states[-2]
without CLS -> 24x24 -> torch adaptive_avg_pool2d -> Linear/GELU/Linear -> spliced into hand-written
ChatML text -> Qwen2ForCausalLM), sharing only the loaded weights with the backend.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2ForCausalLM

from model import compressor
from model.answerer import AnswerConfig, Answerer
from model.backend import LoadConfig
from model.backends import load_backend
from model.dynamic_ckpt import (
    PLACEHOLDER,
    CheckpointError,
    DynamicConfig,
    geometry,
    load_checkpoint,
    load_tokenizer,
    make_projector,
    part_of,
)
from model.dynamic_vlm import DYNAMIC_FORMAT, DynamicVLMBackend
from model.families import DEFAULTS, family_of
from model.presets import resolve_model
from model.presets_dynamic import PRESETS, ShardWriter, config_json, text_config
from model.prompt import PromptConfig, render_chat
from model.slots import Slot

VISION = "model.vision_tower.vision_tower.vision_model."
QUESTION = "What colour is the car at the start?"
CPU = torch.device("cpu")
KEEP = 24


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dynamic-presets")


@pytest.fixture(scope="module")
def ckpt(cache: Path) -> Path:
    return Path(resolve_model("tiny-dynamic-vlm", cache))


@pytest.fixture(scope="module")
def backend(ckpt: Path) -> DynamicVLMBackend:
    return DynamicVLMBackend(LoadConfig(model=str(ckpt), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """[3, 240, 320, 3] uint8: smooth random colour fields, not 336 px (the resize is exercised)."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (3, 6, 8, 3)).astype(np.uint8)
    return np.repeat(np.repeat(small, 40, axis=1), 40, axis=2)


def _copy_without_weights(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    return dst


# --- the checkpoint layout -------------------------------------------------------------------------


def test_checkpoint_layout_loads_every_key(ckpt: Path, backend: DynamicVLMBackend) -> None:
    raw = load_file(ckpt / "model.safetensors")
    parts = {"vision": backend.vision, "projector": backend.projector, "llm": backend.lm}
    seen = {name: 0 for name in parts}
    for key, value in raw.items():
        part, name = part_of(key)
        assert torch.equal(parts[part].state_dict()[name], value), key
        seen[part] += 1
    assert all(seen.values()) and seen["projector"] == 4
    assert "lm_head.weight" not in raw  # tied: the loader takes the embedding
    assert backend.lm.lm_head.weight.data_ptr() == backend.lm.model.embed_tokens.weight.data_ptr()
    assert family_of(str(ckpt)) == "dynamic-vlm"
    info = backend.info
    assert (info.s_max, info.dim, info.pool_space, info.positions) == (24, 32, "vision", "1d")


def test_a_missing_key_fails_loudly(ckpt: Path, tmp_path: Path) -> None:
    raw = load_file(ckpt / "model.safetensors")
    gone = VISION + "encoder.layers.1.mlp.fc2.bias"
    del raw[gone]
    bad = _copy_without_weights(ckpt, tmp_path / "missing")
    save_file(raw, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys") as err:
        load_checkpoint(str(bad), CPU, torch.float32)
    assert gone in str(err.value)


@pytest.mark.parametrize("extra", ["model.mm_projector.4.weight", "model.image_newline"])
def test_an_unexpected_key_fails_loudly(ckpt: Path, tmp_path: Path, extra: str) -> None:
    raw = load_file(ckpt / "model.safetensors")
    raw[extra] = torch.zeros(8)
    bad = _copy_without_weights(ckpt, tmp_path / "unexpected")
    save_file(raw, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys") as err:
        load_checkpoint(str(bad), CPU, torch.float32)
    assert extra in str(err.value)


def test_sharded_checkpoint_with_index_loads(ckpt: Path, tmp_path: Path, backend: DynamicVLMBackend) -> None:
    raw = load_file(ckpt / "model.safetensors")
    out = _copy_without_weights(ckpt, tmp_path / "sharded")
    writer = ShardWriter(out, shard_bytes=4_000_000)
    for key, value in raw.items():
        part, name = part_of(key)
        writer.add(part, {name: value})
    writer.close()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2 and set(index["weight_map"]) == set(raw)
    parts = load_checkpoint(str(out), CPU, torch.float32)
    for name, value in backend.lm.state_dict().items():
        assert torch.equal(parts.lm.state_dict()[name], value), name


def test_vision_tower_from_mm_vision_tower_when_the_checkpoint_has_none(
    ckpt: Path, tmp_path: Path, backend: DynamicVLMBackend
) -> None:
    """LLaVA's delay_load: no key under the vision prefix -> the tower comes from mm_vision_tower."""
    raw = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if not k.startswith(VISION)}
    out = _copy_without_weights(ckpt, tmp_path / "no-tower")
    save_file(raw, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="hf download"):  # openai's tower is not cached here
        load_checkpoint(str(out), CPU, torch.float32)
    backend.vision.save_pretrained(tmp_path / "tower")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "mm_vision_tower": str(tmp_path / "tower")}))
    parts = load_checkpoint(str(out), CPU, torch.float32)
    assert isinstance(parts.vision, CLIPVisionModel)
    for name, value in backend.vision.state_dict().items():
        assert torch.equal(parts.vision.state_dict()[name], value), name


def test_no_tokenizer_says_which_to_put_there(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "no-tokenizer"
    shutil.copytree(ckpt, out, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    with pytest.raises(CheckpointError, match=r"Qwen2\.5-14B-Instruct"):
        load_tokenizer(str(out))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"mm_projector_type": "linear"}, "mlp2x_gelu"),
        ({"mm_vision_select_feature": "cls_patch"}, "CLS dropped"),
        ({"mm_vision_tower": None}, "mm_vision_tower"),
        ({"mm_use_im_start_end": True}, "im_start"),
    ],
)
def test_a_config_outside_the_layout_is_refused(ckpt: Path, change: dict[str, object], says: str) -> None:
    raw = json.loads((ckpt / "config.json").read_text())
    raw.update(change)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(CheckpointError, match=says):
        DynamicConfig.from_dict(raw)


def test_load_backend_picks_dynamic_vlm(cache: Path, ckpt: Path) -> None:
    loaded = load_backend(
        LoadConfig(model="tiny-dynamic-vlm", cache_dir=cache, device="cpu", dtype="float32")
    )
    assert isinstance(loaded, DynamicVLMBackend)
    assert loaded.info.family == "dynamic-vlm" and loaded.info.fingerprint.startswith("dynamic-vlm:")


def test_the_14b_preset_has_byte_video_llm_sizes() -> None:
    """Counted on the meta device (never built in tests): Qwen2.5-14B 14.77B, CLIP-L/336 303.5M."""
    spec = PRESETS["random-dynamic-vlm-14b"]
    text, vision = text_config(spec, 152064), CLIPVisionConfig(**spec.vision)
    raw = config_json(spec, text, vision)
    assert "vision_config" not in raw  # as the released config: CLIP-L/336 is implied
    cfg = DynamicConfig.from_dict(json.loads(json.dumps(raw)))
    with torch.device("meta"):
        counts = [
            sum(p.numel() for p in m.parameters())
            for m in (Qwen2ForCausalLM(cfg.text), CLIPVisionModel(cfg.vision), make_projector(1024, 5120))
        ]
    assert counts == [14_770_033_664, 303_507_456, 31_467_520]
    assert geometry(cfg.vision) == (336, 14) and cfg.select_layer == -2 and cfg.mm_hidden_size == 1024


# --- fidelity: an independent forward of the paper ----------------------------------------------------


def paper_embeds(
    backend: DynamicVLMBackend, frames: np.ndarray, sides: list[int], labels: list[str]
) -> torch.Tensor:
    """The paper's LLM input, written from scratch: CLIP -> hidden_states[-2] without CLS -> 24x24 grid ->
    adaptive average pooling to each side -> mlp2x_gelu -> spliced into hand-written ChatML: [1, L, H]."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = (
        F.interpolate(x, size=(336, 336), mode="bicubic", antialias=True, align_corners=False)
        .round()
        .clamp(0, 255)
    )
    with torch.no_grad():
        hidden = backend.vision(pixel_values=(x / 255 - mean) / std, output_hidden_states=True).hidden_states[
            -2
        ]
        grid = hidden[:, 1:].reshape(len(frames), 24, 24, -1).permute(0, 3, 1, 2)  # [F, D, 24, 24]
        w = backend.projector.state_dict()
        tok = backend.tokenizer

        def text(s: str) -> torch.Tensor:
            ids = torch.tensor(tok(s, add_special_tokens=False)["input_ids"])
            return backend.lm.model.embed_tokens(ids)

        pieces = [text("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")]
        for i, (side, label) in enumerate(zip(sides, labels, strict=True)):
            pooled = F.adaptive_avg_pool2d(grid[i : i + 1], side)[0].permute(1, 2, 0).reshape(side * side, -1)
            visual = F.linear(
                F.gelu(F.linear(pooled, w["0.weight"], w["0.bias"])), w["2.weight"], w["2.bias"]
            )
            pieces += [text(f"{label}: "), visual, text("; ")]
        pieces.append(text(f"\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"))
        return torch.cat(pieces)[None]


def forward(backend: DynamicVLMBackend, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2's last hidden states at every position [1, L, H], and the logits of the last KEEP positions
    (the question and the first answer token; all L x 151665 logits would cost ~1 GB per run)."""
    with torch.no_grad():
        out = backend.lm(inputs_embeds=embeds, logits_to_keep=KEEP, output_hidden_states=True)
    return out.hidden_states[-1], out.logits


def stored_slots(
    backend: DynamicVLMBackend, frames: np.ndarray, sides: list[int], times: list[float]
) -> list[Slot]:
    """encode -> float32 bytes (as the Redis memory stores them) -> the compressor's pooling; each slot
    carries its label's token count, as the memory accounts it."""
    tokens = backend.encode(frames)
    stored = np.frombuffer(tokens.astype(np.float32).tobytes(), np.float32).reshape(tokens.shape)
    texts = backend.label_tokens(times)
    return [
        Slot(i, t, t, i, i, side, backend.pool(stored[i], side), text_tokens=n)
        for i, (side, t, n) in enumerate(zip(sides, times, texts, strict=True))
    ]


@pytest.mark.parametrize("sides", [[24, 24, 24], [12, 10, 4], [1, 5, 23]])
def test_logits_match_the_papers_forward(
    backend: DynamicVLMBackend, frames: np.ndarray, sides: list[int]
) -> None:
    times, labels = [0.0, 1.4, 1500.0], ["0s", "1s", "1500s"]
    prompt = backend.build_prompt(stored_slots(backend, frames, sides, times), QUESTION, PromptConfig())
    assert prompt.visual_tokens == sum(s * s for s in sides)
    assert prompt.inputs_embeds is not None
    reference = paper_embeds(backend, frames, sides, labels)
    assert prompt.inputs_embeds.shape == reference.shape
    ours_h, ours = forward(backend, prompt.inputs_embeds)
    ref_h, ref = forward(backend, reference)
    diff, diff_h = float((ours - ref).abs().max()), float((ours_h - ref_h).abs().max())
    print(
        f"dynamic-vlm fidelity, sides {sides}: max |logit difference| = {diff:.3g} over {tuple(ours.shape)}, "
        f"max |final hidden difference| = {diff_h:.3g} over {tuple(ours_h.shape)}"
    )
    assert diff <= 1e-4 and diff_h <= 2e-4


def test_a_string_only_template_renders_the_same_layout(backend: DynamicVLMBackend) -> None:
    """Qwen2.5-Instruct's own template takes string content only: render_chat's fallback gives the
    same text around the placeholder as the preset's template."""
    tok = backend.tokenizer
    ours = render_chat(tok, QUESTION, PromptConfig(), PLACEHOLDER)
    preset_template = tok.chat_template
    tok.chat_template = (
        "{%- for m in messages %}"
        "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    try:
        assert render_chat(tok, QUESTION, PromptConfig(), PLACEHOLDER) == ours
    finally:
        tok.chat_template = preset_template
    assert ours[1] == f"\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"


def test_labels_are_the_papers_seconds() -> None:
    cases = {0.0: "0s: ", 12.9: "12s: ", 86_399.0: "86399s: ", 100_020.0: "1667m: "}
    assert {t: DYNAMIC_FORMAT.before(t) for t in cases} == cases and DYNAMIC_FORMAT.after == "; "


def test_label_tokens_fit_the_family_reserve(backend: DynamicVLMBackend) -> None:
    starts = [0.0, 9.0, 99.0, 999.0, 5_000.0, 59_999.0, 3_599_999.0, 86_400_000.0 - 1]
    counts = backend.label_tokens(starts)
    assert counts[0] == 6  # "0", "s", ":", " ", ";", " "
    assert max(counts) == 10 == DEFAULTS["dynamic-vlm"].text_tokens  # "86399s: " + "; "


# --- answers ----------------------------------------------------------------------------------------


def test_answer_whole_and_streamed(backend: DynamicVLMBackend, frames: np.ndarray) -> None:
    sides, times = [6, 4, 5], [0.0, 30.0, 4000.0]
    slots = stored_slots(backend, frames, sides, times)
    labels = backend.label_tokens(times)
    budget = compressor.layout_cost(sides, labels) + 3
    cfg = PromptConfig()
    prompt = backend.build_prompt(slots, QUESTION, cfg, budget)
    assert list(prompt.text_tokens_per_slot) == labels
    answerer = Answerer(backend, cfg, AnswerConfig(max_new_tokens=8))
    whole = answerer.answer(slots, QUESTION, budget)
    assert whole.text and whole.tokens_used <= budget and whole.new_tokens == 8
    with answerer.stream(slots, QUESTION, budget) as stream:
        pieces = list(stream)
    streamed = stream.result()
    assert "".join(pieces) == streamed.text == whole.text
    assert streamed.tokens_used == whole.tokens_used <= budget
