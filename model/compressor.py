"""The dynamic compressor of Dynamic-VLM (arXiv 2412.09530) as pure numpy functions.

Three pieces, kept apart so that prompt building never needs the encoder:

* ``plan_side`` – the paper's rule: with N slots and budget B, every slot gets side
  ``s = clamp(floor(sqrt(B / N - c)), 1, s_max)``; ``c`` is the per-slot text
  overhead (timestamps) that the budget also pays for (``c = 0`` is the paper exactly).
* ``pool`` – adaptive average pooling of a token grid (the paper's compressor).
* ``layout_cost`` – how many prompt tokens a memory layout costs.

numpy only: the API process imports this without torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class BudgetError(ValueError):
    """A layout costs more tokens than its budget allows, or two counts disagree."""


def max_slots(budget: int, text_tokens: int = 0, min_side: int = 1) -> int:
    """The most slots a budget can hold at the smallest side (beyond it, slots merge)."""
    per_slot = min_side * min_side + text_tokens
    return budget // per_slot


def plan_side(n_slots: int, budget: int, s_max: int, text_tokens: int = 0, min_side: int = 1) -> int:
    """Grid side for every slot when the memory holds ``n_slots`` slots.

    Raises BudgetError when even ``min_side`` does not fit (the caller must merge first).
    """
    if n_slots <= 0:
        return s_max
    if n_slots > max_slots(budget, text_tokens, min_side):
        raise BudgetError(
            f"{n_slots} slots do not fit a budget of {budget} tokens at side {min_side} "
            f"with {text_tokens} text tokens per slot (max {max_slots(budget, text_tokens, min_side)})"
        )
    side = math.isqrt(budget // n_slots - text_tokens)
    # isqrt(floor(B/N) - c) == floor(sqrt(B/N - c)) for integer c, so N * (s^2 + c) <= B.
    return max(min_side, min(s_max, side))


def layout_cost(sides: Iterable[int], text_tokens: int = 0) -> int:
    """Prompt tokens of a memory layout: each slot costs side^2 visual tokens plus its text."""
    return sum(s * s + text_tokens for s in sides)


def _bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    # Same bin edges as torch.nn.functional.adaptive_avg_pool2d.
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def pool(tokens: np.ndarray, side: int) -> np.ndarray:
    """Adaptive average pooling of the grid axes.

    tokens: [..., s, s, D] -> [..., side, side, D]; a no-op when side == s.
    Pooling up (side > s) is refused: detail that was dropped cannot come back.
    """
    s = tokens.shape[-2]
    if tokens.shape[-3] != s:
        raise ValueError(f"token grid must be square, got {tokens.shape}")
    if side == s:
        return tokens
    if not 1 <= side < s:
        raise ValueError(f"cannot pool a {s}x{s} grid to {side}x{side}")
    work = tokens.astype(np.float32, copy=False)
    rows = np.stack([work[..., a:b, :, :].mean(axis=-3) for a, b in _bins(s, side)], axis=-3)
    out = np.stack([rows[..., a:b, :].mean(axis=-2) for a, b in _bins(s, side)], axis=-2)
    return out.astype(tokens.dtype, copy=False)


def merge_tokens(left: np.ndarray, n_left: int, right: np.ndarray, n_right: int) -> np.ndarray:
    """Temporal merge of two same-side grids, weighted by how many frames each covers."""
    if left.shape != right.shape:
        raise ValueError(f"cannot merge grids of shapes {left.shape} and {right.shape}")
    w = n_left / (n_left + n_right)
    merged = left.astype(np.float32) * w + right.astype(np.float32) * (1.0 - w)
    return merged.astype(left.dtype)
