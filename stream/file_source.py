"""The file/URL video source: one import for probing and sampling clips (files, uploads, http(s) URLs).

    info = probe(url)                                    # header metadata, VideoInfo
    for frame in sample_frames(url, mode="fps", fps=1):  # blocking iterator of Frame
        ...
    async for frame in aiter_frames(url, mode="keyframes"):  # same frames, decoded in a thread
        ...

The pieces live in ``urls`` (allow-list, FFmpeg options, redaction), ``av_input`` (open + error
mapping), ``probe``, ``sampling`` and ``async_frames``. Knows nothing about models, workers or HTTP.
"""

from __future__ import annotations

from stream.async_frames import aiter_frames
from stream.probe import VideoInfo, probe
from stream.sampling import Mode, sample_frames

__all__ = ["Mode", "VideoInfo", "aiter_frames", "probe", "sample_frames"]
