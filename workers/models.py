"""Model loading for worker processes (imported lazily: the only workers module that needs torch)."""

from __future__ import annotations

from core.settings import Settings
from model.answerer import AnswerConfig, Answerer, PromptConfig
from model.backend import Backend, LoadConfig
from model.backends import load_backend as load_family_backend
from model.memory import MemoryConfig


def load_backend(settings: Settings) -> Backend:
    """Load the configured checkpoint once (a preset is built into the cache first)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = None if settings.device == "auto" else settings.device
    return load_family_backend(
        LoadConfig(
            model=settings.model,
            cache_dir=settings.model_cache,
            device=device,
            dtype=settings.dtype,
            max_batch=settings.encode_batch,
        )
    )


def text_costs(backend: Backend, memory: MemoryConfig, starts: list[float]) -> list[int]:
    """Tokens of each frame's slot text in the prompt (all 0 when the memory has none)."""
    if not memory.text_tokens:
        return [0] * len(starts)
    return backend.label_tokens(starts)


def answerer_for(backend: Backend, memory: MemoryConfig, max_new_tokens: int) -> Answerer:
    """An answerer whose per-slot text reserve matches the memory it reads (cheap: no loading)."""
    prompt = PromptConfig(timestamps=memory.text_tokens > 0, text_tokens=memory.text_tokens)
    return Answerer(backend, prompt, AnswerConfig(max_new_tokens=max_new_tokens))
