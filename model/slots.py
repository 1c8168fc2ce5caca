"""Small value objects of the token memory. numpy only: importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
class Slot:
    """One memory slot: an s×s token grid covering the time span [t0, t1].

    tokens: [side, side, D]. A single keyframe has t0 == t1 and frames == 1;
    a temporally merged slot covers frames seq_lo..seq_hi (inclusive, contiguous).
    """

    slot_id: int
    t0: float
    t1: float
    seq_lo: int
    seq_hi: int
    side: int
    tokens: np.ndarray
    text_tokens: int = 0  # the timestamp-text tokens the memory accounted for (0: not given)

    @property
    def frames(self) -> int:
        return self.seq_hi - self.seq_lo + 1

    @property
    def n_tokens(self) -> int:
        return self.side * self.side
