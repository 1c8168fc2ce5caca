"""Frame value objects shared by every source.

Knows nothing about models, Redis or HTTP: a frame is pixels plus times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame.

    seq:       0-based index among the frames *sampled* from this source (contiguous, no holes).
    pts:       presentation time in seconds from the start of the source.
    image:     [H, W, 3] uint8 RGB.
    keyframe:  whether the decoder flagged it as a keyframe.
    wall_time: Unix time of capture for live sources, else None.
    source_time: for live sources, the decoder's own timestamp of the frame in seconds (``frame.time``:
               the stream's clock, which may restart or jump on a reconnect), None if the stream gave
               none; None for files.
    """

    seq: int
    pts: float
    image: np.ndarray
    keyframe: bool = False
    wall_time: float | None = None
    source_time: float | None = None
