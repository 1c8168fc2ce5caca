"""The interface every model family implements, one small role per method.

A backend says what it is (``BackendInfo``) and does five things:

* ``encode``: RGB frames -> a token grid per frame, in its pooling space (all feature levels
  stacked on the channel axis, so the memory pools and merges every level alike);
* ``pool``: the compressor's pooling of a grid to a smaller side (every level alike);
* ``to_llm_embeds``: stored tokens -> what the LLM takes in their place;
* ``build_prompt``: slots and a question -> engine-neutral LLM inputs (``model.prompt.Prompt``)
  in the model's own per-frame time format, with the token accounting;
* ``label_tokens``: how many prompt tokens each slot's time label takes (the memory's budget pays
  for them); counting is kept apart from building, and needs only the tokenizer.

Generation is not a backend's job: ``model.engine`` runs it. Nothing here knows Redis, Celery or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from core.settings import DEFAULT_CACHE_DIR, DEFAULT_MODEL

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.prompt import Prompt, PromptConfig
    from model.slots import Slot

PoolSpace = Literal["vision", "llm"]
Positions = Literal["1d", "mrope"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What a loaded backend is. ``fingerprint`` names the checkpoint's architecture and weights
    layout: a memory written by one fingerprint is only ever read by the same one."""

    family: str
    """``llava-ov``, ``qwen2.5-vl``, ``qwen3-vl`` or ``dynamic-vlm``."""
    fingerprint: str
    s_max: int
    """Native grid side of one frame (after the model's own merge/pooling)."""
    dim: int
    """Stored token width: ``width * levels``."""
    width: int
    """Width of one feature level."""
    pool_space: PoolSpace
    """Where pooling happens: on vision features (before the projector) or in the LLM's space."""
    positions: Positions
    """How the LLM places tokens: plain 1-D positions, or Qwen's multimodal RoPE (t, h, w)."""
    image_size: int = 0
    """Frames are encoded at image_size x image_size pixels (decoders may resize to it up front)."""
    levels: int = 1
    """Feature levels per token, stacked on the channel axis (Qwen3-VL: the main grid + DeepStack)."""
    label_format: str = ""
    """The per-slot time text, as an example (documentation and bench output)."""


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How to load and run a checkpoint of any family."""

    model: str = DEFAULT_MODEL
    """Hub id, local checkpoint directory, or preset name (``model.names.PRESET_NAMES``)."""
    cache_dir: Path = field(default=DEFAULT_CACHE_DIR)
    """Where preset checkpoints are built (``cache_dir/<preset>``)."""
    device: str | None = None
    """torch device; None picks cuda when available, else cpu."""
    dtype: DtypeName = "auto"
    """Weights and activations; ``auto``: ``model.runtime.pick_dtype``."""
    max_batch: int = 8
    """Frames per vision-tower forward (batches above 8 gain nothing on CPU)."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


@runtime_checkable
class Backend(Protocol):
    """A loaded checkpoint. Shapes: F frames, native side ``info.s_max``, stored width ``info.dim``."""

    info: BackendInfo
    config: LoadConfig

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...
    @property
    def lm(self) -> PreTrainedModel:
        """The model whose ``generate`` the engine calls."""
        ...

    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB (any size) -> tokens [F, s_max, s_max, dim] float32."""
        ...

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim]."""
        ...

    def to_llm_embeds(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] stored (pooled) tokens -> [N, llm_hidden] on the device, in the model dtype."""
        ...

    def label_tokens(self, starts: Sequence[float]) -> list[int]:
        """Prompt tokens of the time label of a slot starting at each time (seconds of stream time)."""
        ...

    def build_prompt(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        budget: int | None = None,
        gaps: Sequence[tuple[float, float]] = (),
    ) -> Prompt:
        """The LLM inputs for ``question`` over ``slots`` (memory order); see ``model.prompt``."""
        ...
