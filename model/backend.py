"""The vision-backend interface every model family implements.

A backend turns RGB frames into a token grid in the space where pooling happens,
pools it, and maps pooled tokens into the LLM's embedding space. It knows nothing
about Redis, Celery or HTTP.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VisionBackend(Protocol):
    """Shapes: F frames, native grid side ``s_max``, token width ``dim``."""

    s_max: int
    dim: int
    image_size: int

    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB (any size) -> tokens [F, s_max, s_max, dim] float32."""
        ...

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim]."""
        ...

    def to_llm_embeds(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: [N, dim] (pooled) -> [N, llm_hidden] in the LLM's embedding space."""
        ...
