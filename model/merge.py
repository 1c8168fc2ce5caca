"""Temporal-merge policies: which adjacent pair of slots to merge once the side is at its minimum.

A policy scores the pair (left, right); the memory merges the lowest score, the oldest
pair on ties. Scores are cached per pair, so a merge only re-scores its two neighbours.
numpy only.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class MergePolicy(Protocol):
    name: str
    needs_tokens: bool

    def score(
        self, n_left: int, n_right: int, mean_left: np.ndarray | None, mean_right: np.ndarray | None
    ) -> float:
        """Lower merges first. mean_*: [D] token means of each slot (None when needs_tokens is False)."""
        ...


class SimilarNeighbours:
    """Merge the two adjacent slots that look most alike (cosine distance of their mean tokens).

    Distinct moments survive; long static stretches collapse into one slot.
    """

    name = "similar"
    needs_tokens = True

    def score(
        self, n_left: int, n_right: int, mean_left: np.ndarray | None, mean_right: np.ndarray | None
    ) -> float:
        assert mean_left is not None and mean_right is not None
        a = mean_left.astype(np.float64)
        b = mean_right.astype(np.float64)
        denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
        return 1.0 - float(a @ b) / denom


class Uniform:
    """Merge the adjacent pair covering the fewest frames (oldest first on ties).

    Keeps every slot's span about equal: the memory becomes a uniform subsampling of the stream.
    """

    name = "uniform"
    needs_tokens = False

    def score(
        self, n_left: int, n_right: int, mean_left: np.ndarray | None, mean_right: np.ndarray | None
    ) -> float:
        return float(n_left + n_right)


POLICIES: dict[str, MergePolicy] = {p.name: p for p in (SimilarNeighbours(), Uniform())}


def get_policy(name: str) -> MergePolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown merge policy {name!r}; choose one of {sorted(POLICIES)}") from None
