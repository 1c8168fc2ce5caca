"""aiter_frames(): the async face of sample_frames, decoding in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from stream.async_frames import aiter_frames
from stream.errors import ForbiddenUrl, NoVideoStream
from stream.sampling import sample_frames
from tests.stream.clips import Clips


async def test_same_frames_as_sample_frames(clips: Clips) -> None:
    kwargs = {"mode": "fps", "fps": 3.0, "size": (48, 32), "allow_local": True, "start_seq": 5}
    expected = list(sample_frames(str(clips.cfr), **kwargs))  # type: ignore[arg-type]
    got = [f async for f in aiter_frames(str(clips.cfr), queue_size=2, **kwargs)]  # type: ignore[arg-type]
    assert [(f.seq, f.pts, f.keyframe) for f in got] == [(f.seq, f.pts, f.keyframe) for f in expected]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected, strict=True))


async def test_errors_reach_the_consumer(clips: Clips) -> None:
    with pytest.raises(ForbiddenUrl):
        async for _ in aiter_frames("file:///etc/passwd"):
            pass
    with pytest.raises(NoVideoStream):
        async for _ in aiter_frames(str(clips.audio_only), allow_local=True):
            pass


async def test_event_loop_stays_responsive(clips: Clips) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    n = 0
    async for _ in aiter_frames(str(clips.gop10), allow_local=True, fps=100.0):
        n += 1
    task.cancel()
    assert n == 125 and ticks > 0


async def test_early_exit_stops_the_decode_thread(clips: Clips) -> None:
    before = {t.ident for t in threading.enumerate() if t.name == "vidmem-decode"}
    frames = aiter_frames(str(clips.gop10), allow_local=True, fps=100.0, queue_size=1)
    async for frame in frames:
        if frame.seq == 2:
            break
    await frames.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = {t.ident for t in threading.enumerate() if t.name == "vidmem-decode"} - before
        if not alive:
            break
        await asyncio.sleep(0.02)
    assert not alive
