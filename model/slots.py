"""Small value objects of the token memory: frames in, slots out, a memory's config and state.

numpy only (with the pure ``compressor`` and ``merge``): importable without torch or Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from core.errors import VidmemError
from model.compressor import layout_cost, max_slots
from model.merge import get_policy

StorageDtype = Literal["float16", "float32"]


class BackendMismatch(VidmemError):
    """A memory written by one model was asked or extended with another: its tokens mean nothing there."""

    code = "backend_mismatch"
    status = 409


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame after the vision encoder, before it enters the memory.

    tokens: [s, s, D] float array (usually s == s_max of the backend).
    thumb:  a small JPEG of the frame (bytes), or b"".
    """

    seq: int
    t: float
    tokens: np.ndarray
    thumb: bytes = b""
    wall_time: float | None = None
    text_tokens: int = 0  # tokens of this frame's timestamp text in the prompt (0: none)


@dataclass(frozen=True, slots=True)
class SlotSpan:
    """What a memory slot covers: the time span [t0, t1], frames seq_lo..seq_hi (inclusive,
    contiguous), as an s×s grid. A single keyframe has t0 == t1 and frames == 1."""

    slot_id: int
    t0: float
    t1: float
    seq_lo: int
    seq_hi: int
    side: int

    @property
    def frames(self) -> int:
        return self.seq_hi - self.seq_lo + 1


@dataclass(frozen=True, slots=True)
class Slot(SlotSpan):
    """One memory slot with its tokens: [side, side, D]."""

    tokens: np.ndarray
    text_tokens: int = 0  # the timestamp-text tokens the memory accounted for (0: not given)

    @property
    def n_tokens(self) -> int:
        return self.side * self.side


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Per-stream memory parameters, fixed when the memory is created.

    budget:      max prompt tokens of the memory (visual tokens + per-slot timestamp text).
    s_max:       the backend's native grid side (14 for LLaVA-OneVision video).
    dim:         token width D.
    text_tokens: the most tokens one slot's timestamp text may take (0: no timestamps, the
                 paper's pure rule). Each frame brings its own exact count (``EncodedFrame``).
    min_side:    smallest grid side before slots merge temporally.
    policy:      merge policy name (``merge.POLICIES``).
    dtype:       storage dtype of the tokens.
    backend:     the fingerprint of the backend that wrote it.
    """

    budget: int
    s_max: int
    dim: int
    text_tokens: int = 0
    min_side: int = 1
    policy: str = "similar"
    dtype: StorageDtype = "float16"
    backend: str = ""
    """Fingerprint of the backend whose tokens the memory holds (``BackendInfo.fingerprint``); only that
    backend may add to it or answer from it. Empty: written before fingerprints (by LLaVA-OV)."""

    def __post_init__(self) -> None:
        if self.s_max < 1 or self.dim < 1 or not 1 <= self.min_side <= self.s_max:
            raise ValueError(f"bad memory geometry: {self}")
        if max_slots(self.budget, self.text_tokens, self.min_side) < 2:
            raise ValueError(f"budget {self.budget} holds fewer than 2 slots at side {self.min_side}")
        get_policy(self.policy)

    def require_backend(self, fingerprint: str, dim: int) -> None:
        """Raise BackendMismatch unless the backend with ``fingerprint`` (tokens ``dim`` wide) may read and
        extend this memory: the one that wrote it; for a memory written before fingerprints (only
        LLaVA-OneVision was served then), a LLaVA-OV backend of its width."""
        wrote = self.backend or "llava-ov (written before model fingerprints)"
        same = self.backend == fingerprint if self.backend else fingerprint.startswith("llava-ov:")
        if not same or self.dim != dim:
            raise BackendMismatch(
                f"this stream's memory holds tokens of model {wrote}, the loaded model is {fingerprint}: "
                "ask it with the model that wrote it, or create a new stream"
            )

    @property
    def max_slots(self) -> int:
        """The most slots the memory can ever hold (every timestamp at its cheapest, 1 token)."""
        return max_slots(self.budget, 1 if self.text_tokens else 0, self.min_side)


@dataclass(frozen=True, slots=True)
class SlotInfo(SlotSpan):
    """A slot's metadata without its tokens, as the memory stores it."""

    wall0: float | None = None
    wall1: float | None = None
    text: int = 0  # tokens of its timestamp text in the prompt

    def to_json(self) -> str:
        return json.dumps(
            [self.t0, self.t1, self.seq_lo, self.seq_hi, self.side, self.wall0, self.wall1, self.text]
        )

    @classmethod
    def from_json(cls, slot_id: int, raw: bytes | str) -> SlotInfo:
        t0, t1, lo, hi, side, w0, w1, text = json.loads(raw)
        return cls(slot_id, t0, t1, lo, hi, side, w0, w1, text)


@dataclass(frozen=True, slots=True)
class MemoryState:
    """A consistent view of one stream's memory. ``slots`` in time order."""

    stream_id: str
    config: MemoryConfig
    version: int
    next_seq: int
    side: int
    slots: tuple[SlotInfo, ...]
    tokens: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def tokens_used(self) -> int:
        return layout_cost([s.side for s in self.slots], [s.text for s in self.slots])

    def as_slots(self) -> list[Slot]:
        """The slots with their tokens (requires a state read with tokens)."""
        return [
            Slot(s.slot_id, s.t0, s.t1, s.seq_lo, s.seq_hi, s.side, self.tokens[s.slot_id], s.text)
            for s in self.slots
        ]


def frames_in(state: MemoryState) -> Iterable[int]:
    """Every frame sequence number the memory covers, in order (for checks and tests)."""
    for s in state.slots:
        yield from range(s.seq_lo, s.seq_hi + 1)
