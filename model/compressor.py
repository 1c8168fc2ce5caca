"""The dynamic compressor of Dynamic-VLM (arXiv 2412.09530) as pure numpy functions.

Three pieces, kept apart so that prompt building never needs the encoder:

* ``plan_sides`` – the paper's rule: with N slots and budget B, every slot gets side
  ``s = clamp(floor(sqrt(B / N)), 1, s_max)``. Here the budget also pays for each slot's
  timestamp text (``c_i`` tokens), so ``s`` comes from ``(B - sum c_i) / N``; and the tokens
  the floor leaves unused go to the newest slots at side ``s + 1`` (recent minutes stay
  sharper). With no text and no remainder this is the paper exactly.
* ``pool`` – adaptive average pooling of a token grid (the paper's compressor).
* ``layout_cost`` – how many prompt tokens a memory layout costs.

numpy only: the API process imports this without torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


class BudgetError(ValueError):
    """A layout costs more tokens than its budget allows, or two counts disagree."""


def max_slots(budget: int, text_tokens: int = 0, min_side: int = 1) -> int:
    """The most slots a budget can hold at the smallest side (beyond it, slots merge)."""
    per_slot = min_side * min_side + text_tokens
    return budget // per_slot


def plan_sides(text_costs: Sequence[int], budget: int, s_max: int, min_side: int = 1) -> list[int]:
    """Grid side of every slot (oldest first), given each slot's timestamp-text cost.

    Base side ``s = clamp(floor(sqrt((B - sum(c_i)) / N)), min_side, s_max)``; the tokens the
    floor leaves unused raise the newest slots to ``s + 1``, as many as fit. With all
    ``c_i = 0`` and no remainder this is the paper's rule. Raises BudgetError when even
    ``min_side`` everywhere does not fit (the caller must merge first).
    """
    n = len(text_costs)
    if n == 0:
        return []
    visual = budget - sum(text_costs)
    if visual < n * min_side * min_side:
        raise BudgetError(
            f"{n} slots with {sum(text_costs)} text tokens do not fit a budget of {budget} at side {min_side}"
        )
    side = max(min_side, min(s_max, math.isqrt(visual // n)))
    if side == s_max:
        return [side] * n
    extra = min(n, (visual - n * side * side) // (2 * side + 1))  # (s+1)^2 - s^2 each
    return [side] * (n - extra) + [side + 1] * extra


def fits(text_costs: Sequence[int], budget: int, min_side: int = 1) -> bool:
    """Whether slots with these text costs fit the budget at ``min_side`` (else: merge)."""
    return len(text_costs) * min_side * min_side + sum(text_costs) <= budget


def layout_cost(sides: Iterable[int], text_costs: Iterable[int] | int = 0) -> int:
    """Prompt tokens of a memory layout: each slot costs side^2 visual tokens plus its text.

    text_costs: one count per slot, or one count for every slot.
    """
    sides = list(sides)
    texts = [text_costs] * len(sides) if isinstance(text_costs, int) else list(text_costs)
    if len(texts) != len(sides):
        raise ValueError(f"{len(sides)} sides but {len(texts)} text costs")
    return sum(s * s + c for s, c in zip(sides, texts, strict=True))


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
