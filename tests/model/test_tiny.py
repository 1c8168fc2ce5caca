"""The seeded tiny preset: builds once, reloads through from_pretrained, and is deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

from model.presets import resolve_model
from model.presets_llava import CHAT_TEMPLATE, PRESETS, SPECIAL_TOKENS, preset_config
from model.qwen_vocab import qwen_tokenizer


def _checksum(path: str) -> str:
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_tiny_reloads_with_the_expected_architecture(tiny_path: str) -> None:
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_path)
    cfg: Any = model.config
    assert cfg.vision_config.image_size == 384 and cfg.vision_config.patch_size == 14
    assert cfg.vision_config.hidden_size == 32 and cfg.vision_config.num_hidden_layers == 2
    assert cfg.text_config.hidden_size == 64 and cfg.text_config.num_key_value_heads == 2
    assert cfg.vision_feature_layer == -1 and cfg.vision_feature_select_strategy == "full"
    tok = AutoTokenizer.from_pretrained(tiny_path)
    assert cfg.text_config.vocab_size == len(tok)
    assert model.get_input_embeddings().weight.shape == (len(tok), 64)


def test_resolve_is_idempotent_and_passes_other_names_through(tiny_cache: Path, tiny_path: str) -> None:
    stamp = (Path(tiny_path) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny", tiny_cache) == tiny_path
    assert (Path(tiny_path) / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert resolve_model("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", tiny_cache) == (
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    )
    assert resolve_model("/some/local/dir", tiny_cache) == "/some/local/dir"


def test_same_seed_gives_the_same_checkpoint(tmp_path: Path, tiny_path: str) -> None:
    again = resolve_model("tiny", tmp_path)
    assert again != tiny_path
    assert _checksum(again) == _checksum(tiny_path)
    assert (Path(again) / "tokenizer.json").read_text() == (Path(tiny_path) / "tokenizer.json").read_text()


def test_tokenizer_round_trips_and_special_ids_match_the_config(tiny_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_path)
    cfg = json.loads((Path(tiny_path) / "config.json").read_text())
    text = "At 12s a red car passes the camera; 3 people wait. Zebra-42 ü!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok) == 151648  # Qwen's 151,643 ranks, its 3 ChatML tokens, <image> and <video>
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [9707, 1879]  # Qwen2's real ids
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [151643, 151644, 151645, 151646, 151647]
    assert cfg["image_token_index"] == tok.convert_tokens_to_ids("<image>")
    assert cfg["video_token_index"] == tok.convert_tokens_to_ids("<video>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in SPECIAL_TOKENS:  # each special token is one id, also inside text
        assert tok(f"a{special}b", add_special_tokens=False)["input_ids"][1] == tok.convert_tokens_to_ids(
            special
        )


def test_chat_template_renders_llava_ov_layout(tiny_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_path)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_real_size_presets_match_the_hub_architecture() -> None:
    tok = qwen_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE)
    small: Any = preset_config("random-0.5b", tok)
    assert (small.text_config.hidden_size, small.text_config.num_hidden_layers) == (896, 24)
    assert small.text_config.vocab_size == 151936 and small.tie_word_embeddings
    assert (small.vision_config.hidden_size, small.vision_config.intermediate_size) == (1152, 4304)
    big: Any = preset_config("random-7b", tok)
    assert (big.text_config.hidden_size, big.text_config.num_attention_heads) == (3584, 28)
    assert big.text_config.vocab_size == 152064 and not big.tie_word_embeddings
    assert set(PRESETS) == {"tiny", "random-0.5b", "random-7b", "random-llava-video-7b"}


def test_a_stale_or_partial_build_is_replaced(tmp_path: Path) -> None:
    path = Path(resolve_model("tiny", tmp_path))
    (path / "vidmem_preset.json").write_text(json.dumps({"preset": "tiny", "version": -1}))
    (path / "junk.bin").write_bytes(b"old")
    assert resolve_model("tiny", tmp_path) == str(path)
    assert not (path / "junk.bin").exists()
    assert json.loads((path / "vidmem_preset.json").read_text())["version"] >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
