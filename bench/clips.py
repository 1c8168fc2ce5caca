"""Video files for the benchmarks: the shared real clip, a generated stand-in, a long looped copy.

Knows nothing about models or Redis.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "testdata" / "big_buck_bunny_60s_640x360.mp4"


def generate_clip(path: Path, seconds: int = 60, fps: int = 24, gop_s: int = 10) -> Path:
    """A synthetic H.264 640x360 clip (moving gradient and blocks), keyframe every ``gop_s`` seconds."""
    width, height = 640, 360
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop_s * fps), "preset": "veryfast", "sc_threshold": "0"}
        yy, xx = np.mgrid[0:height, 0:width]
        rng = np.random.default_rng(0)
        for i in range(seconds * fps):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            img[..., 2] = (i * 5) % 256
            x, y = rng.integers(0, width - 64), rng.integers(0, height - 64)
            img[y : y + 64, x : x + 64] = rng.integers(0, 256, 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _spans(src: Path) -> dict[int, int]:
    """Per stream index: time covered by its packets, in its time base (max(pts + duration) - min(pts))."""
    lo: dict[int, int] = {}
    hi: dict[int, int] = {}
    with av.open(str(src)) as inp:
        for packet in inp.demux():
            if packet.pts is None:
                continue
            i = packet.stream.index
            lo[i] = min(lo.get(i, packet.pts), packet.pts)
            hi[i] = max(hi.get(i, packet.pts), packet.pts + (packet.duration or 0))
    return {i: hi[i] - lo[i] for i in lo}


def loop_clip(src: Path, dst: Path, min_seconds: float) -> float:
    """Remux ``src`` end to end into ``dst`` (stream copy, shifted timestamps) until it lasts
    ``min_seconds``; returns the duration in seconds. Video and audio packets are both copied."""
    spans = _spans(src)
    with av.open(str(src)) as probe:
        video = probe.streams.video[0]
        one = float(spans[video.index] * Fraction(video.time_base or Fraction(1, 90_000)))
    loops = max(1, int(np.ceil(min_seconds / one)))
    with av.open(str(dst), "w") as out:
        outs: dict[int, av.stream.Stream] = {}
        for k in range(loops):
            with av.open(str(src)) as inp:
                if not outs:
                    for s in inp.streams:
                        if s.type in ("video", "audio") and s.index in spans:
                            outs[s.index] = out.add_stream_from_template(s)
                for packet in inp.demux():
                    i = packet.stream.index
                    if i not in outs or packet.dts is None or packet.pts is None:
                        continue
                    packet.pts += k * spans[i]
                    packet.dts += k * spans[i]
                    packet.stream = outs[i]
                    out.mux(packet)
    return loops * one
