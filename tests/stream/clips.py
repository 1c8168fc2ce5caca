"""Tiny synthetic media files for the stream tests, written with PyAV's bundled FFmpeg.

Clips are small (default 96x64) so that encoding one takes milliseconds. Every video clip is a
moving gradient, so encoders cannot collapse frames into nothing. Knows nothing about vidmem itself.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = (REPO_ROOT / ".." / "shared" / "testdata").resolve()
"""Real clips shared beside the project (``../shared/testdata``); may be absent."""


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # unknown encoder: av raises its own lookup error
        return False
    return True


DEFAULT_CODEC = next(c for c in ("libx264", "h264", "mpeg4") if _encoder_available(c))
"""Best H.264-ish encoder the bundled FFmpeg offers (libx264 on the PyPI wheels)."""


def pattern(i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i`` of a moving gradient: [H, W, 3] uint8 RGB for size (W, H)."""
    w, h = size
    x = np.arange(w, dtype=np.int32)[None, :]
    y = np.arange(h, dtype=np.int32)[:, None]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = ((x * 4 + i * 7) % 256).astype(np.uint8)
    img[..., 1] = ((y * 4 + i * 3) % 256).astype(np.uint8)
    img[..., 2] = ((x + y + i * 11) % 256).astype(np.uint8)
    return img


def _video_stream(
    container: av.container.OutputContainer,
    codec: str,
    rate: Fraction,
    size: tuple[int, int],
    gop: int,
    time_base: Fraction,
) -> av.VideoStream:
    stream = container.add_stream(codec, rate=rate)
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.codec_context.gop_size = gop
    if codec == "libx264":
        # Fixed GOP: a keyframe exactly every `gop` frames, no scene-cut keyframes, B-frames kept on.
        stream.codec_context.options = {
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            "preset": "ultrafast",
            "tune": "zerolatency" if gop <= 1 else "film",
        }
    else:
        stream.codec_context.options = {"sc_threshold": "1000000000"}
    return stream


def make_clip(
    path: Path,
    seconds: float = 5.0,
    fps: int = 25,
    size: tuple[int, int] = (96, 64),
    gop: int = 25,
    codec: str = DEFAULT_CODEC,
    audio: bool = False,
    faststart: bool = False,
) -> Path:
    """Write a constant-frame-rate clip: ``round(seconds*fps)`` frames, a keyframe every ``gop`` frames.

    size is (width, height). With ``audio`` an AAC track of the same length is added. With
    ``faststart`` (MP4 only) the index (moov) is written before the media data.
    """
    n = round(seconds * fps)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as out:
        v = _video_stream(out, codec, Fraction(fps), size, gop, Fraction(1, fps))
        a = out.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            _write_tone(out, a, seconds)
    return path


def make_vfr_clip(
    path: Path,
    pts_list: Sequence[float],
    size: tuple[int, int] = (96, 64),
    codec: str = DEFAULT_CODEC,
    gop: int = 1000,
) -> Path:
    """Write a variable-frame-rate clip with one frame at each time in ``pts_list`` (seconds, increasing).

    Times are stored with millisecond precision (time base 1/1000).
    """
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = _video_stream(out, codec, Fraction(25), size, gop, tb)
        for i, t in enumerate(pts_list):
            frame = av.VideoFrame.from_ndarray(pattern(i, size), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = tb
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = 16000
    n_samples = int(seconds * rate)
    t = np.arange(n_samples) / rate
    pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    chunk = 1024
    for start in range(0, n_samples, chunk):
        frame = av.AudioFrame.from_ndarray(pcm[:, start : start + chunk], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_unknown_codec(path: Path, seconds: float = 1.0, fps: int = 10) -> Path:
    """An AVI whose one video stream has a codec FFmpeg has no decoder for: MPEG-4 Part 2 frames, written by
    PyAV, under the made-up FourCC "ZZZZ" (in the stream header and the bitmap header). FFmpeg opens it,
    finds a video stream, and no decoder (PyAV's ``codec_context`` is None)."""
    tmp = path.with_suffix(".tmp.avi")
    make_clip(tmp, seconds=seconds, fps=fps, size=(64, 48), gop=fps, codec="mpeg4")
    data = tmp.read_bytes()
    tmp.unlink()
    assert data.count(b"FMP4") == 2, "the AVI muxer wrote another FourCC than expected"
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """Write an AAC-only file (use a ``.m4a`` or ``.mka`` suffix): a container with no video stream."""
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=16000)
        _write_tone(out, a, seconds)
    return path


def _mp4_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Top-level MP4 boxes as (type, offset, size); 32-bit sizes only (enough for the clips made here)."""
    boxes, i = [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size < 8:
            break
        boxes.append((kind, i, size))
        i += size
    return boxes


def garble(src: Path, dst: Path, start_frac: float = 0.0, end_frac: float = 1.0, seed: int = 1234) -> Path:
    """Copy an MP4 to ``dst`` with part of its media data (the ``mdat`` payload) replaced by random bytes.

    ``start_frac``/``end_frac`` select the part of the payload, so the index (moov) stays intact and the
    file still opens: the default destroys every coded frame; (0.4, 0.6) damages the middle only.
    """
    data = bytearray(src.read_bytes())
    _, offset, size = next(b for b in _mp4_boxes(bytes(data)) if b[0] == b"mdat")
    payload_start, payload_len = offset + 8, size - 8
    a = payload_start + int(payload_len * start_frac)
    b = payload_start + int(payload_len * end_frac)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, size=b - a, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: Path, dst: Path, keep_frac: float) -> Path:
    """Copy the first ``keep_frac`` of ``src``'s bytes to ``dst`` (a download cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_frac)])
    return dst


@dataclass(frozen=True)
class Clips:
    """A set of synthetic media files (96x64 video) shared by the tests of one session."""

    root: Path
    cfr: Path  # 5 s, 25 fps, keyframe every 25 frames (1 s), H.264 with B-frames, moov at the end
    gop10: Path  # 5 s, 25 fps, keyframe every 10 frames (0.4 s)
    faststart: Path  # as cfr, moov first
    with_audio: Path  # as cfr plus an AAC track
    audio_only: Path  # AAC only (.m4a)


def make_clip_set(root: Path) -> Clips:
    """Write the Clips set into ``root`` (takes well under a second)."""
    return Clips(
        root=root,
        cfr=make_clip(root / "cfr.mp4", seconds=5, fps=25, gop=25),
        gop10=make_clip(root / "gop10.mp4", seconds=5, fps=25, gop=10),
        faststart=make_clip(root / "faststart.mp4", seconds=5, fps=25, gop=25, faststart=True),
        with_audio=make_clip(root / "with_audio.mp4", seconds=5, fps=25, gop=25, audio=True),
        audio_only=make_audio_only(root / "audio_only.m4a"),
    )
