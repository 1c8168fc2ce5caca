"""Frame value objects shared by every source.

Knows nothing about models, Redis or HTTP: a frame is pixels plus times.

A live source yields ``RawFrame``: pixels and the times it knows, no number. Whoever hands frames over
numbers them into ``Frame``: for a file, ``stream.sampling.sample_frames`` (a file is read in one go,
so its sampler is its hand-over); for a live stream, the live reader's hand-over, with
``stream.timeline.number`` (seq continuing the stream's, pts in stream time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One frame kept by a live source, not numbered.

    image:       [H, W, 3] uint8 RGB.
    wall_time:   Unix time the source decoded it.
    shown_wall:  Unix time it was shown: for HLS, its source time on the wall clock, anchored at the
                 first frame of its timeline (``stream.timeline.SourceTimeline.wall``: a segment
                 decoded in a burst keeps its own spacing); for other sources ``wall_time``.
    source_time: the decoder's own timestamp of the frame in seconds (``frame.time``: the stream's
                 clock, which may restart or jump on a reconnect), None if the stream gave none.
    keyframe:    whether the decoder flagged it as a keyframe.
    """

    image: np.ndarray
    wall_time: float
    shown_wall: float
    source_time: float | None = None
    keyframe: bool = False


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame, numbered.

    seq:       0-based index among the frames *sampled* from this source (contiguous, no holes).
    pts:       presentation time in seconds from the start of the source.
    image:     [H, W, 3] uint8 RGB.
    keyframe:  whether the decoder flagged it as a keyframe.
    wall_time: Unix time it was shown for live streams (``RawFrame.shown_wall``), else None.
    source_time: for live streams, ``RawFrame.source_time``; None for files.
    """

    seq: int
    pts: float
    image: np.ndarray
    keyframe: bool = False
    wall_time: float | None = None
    source_time: float | None = None
