"""The generation engine: engine-neutral LLM inputs (``model.prompt.Prompt``) -> new token ids.

One engine today, Hugging Face ``generate`` (greedy, streamed through a streamer, stopped through a
stopping criterion). Another engine (a vLLM server) would take the same ``Prompt``: token ids or
embeddings, the attention mask, explicit position ids, and the model's extra inputs.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from model.prompt import Prompt


class Engine(Protocol):
    def generate(
        self, prompt: Prompt, max_new_tokens: int, streamer: BaseStreamer, stopping: StoppingCriteriaList
    ) -> torch.Tensor:
        """New token ids [1, T] (greedy); each step's ids go to ``streamer``, the prompt's first."""
        ...


class HFEngine:
    """``lm.generate`` on the loaded model, in this process."""

    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.lm, self.tokenizer = lm, tokenizer

    def generate(
        self, prompt: Prompt, max_new_tokens: int, streamer: BaseStreamer, stopping: StoppingCriteriaList
    ) -> torch.Tensor:
        tok = self.tokenizer
        inputs: dict[str, object] = {"attention_mask": prompt.attention_mask, **prompt.model_kwargs}
        if prompt.input_ids is not None:
            inputs["input_ids"] = prompt.input_ids
        else:
            inputs["inputs_embeds"] = prompt.inputs_embeds
        if prompt.position_ids is not None:
            inputs["position_ids"] = prompt.position_ids
        out = self.lm.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            streamer=streamer,
            stopping_criteria=stopping,
        )
        # From token ids, generate returns the prompt too; from embeddings, only the new tokens.
        return out[:, prompt.input_ids.shape[1] :] if prompt.input_ids is not None else out
