"""Our keyframe sampling of a long file against a plain PyAV keyframe-only decode loop.

ours:          ``sample_frames(mode="keyframes")``: skip_frame NONKEY, best-effort timestamps,
               frame selection, each keyframe converted to RGB [H, W, 3] at native size.
plain_decode:  ``container.decode`` with skip_frame NONKEY, converting nothing: the baseline of
               ``sampling_ratio`` (conservative: ours does strictly more work).
plain_convert: the same loop plus ``frame.to_ndarray(format="rgb24")`` per keyframe (the naive way
               to get the same RGB arrays; PyAV builds a new swscale context for every call).
All three open the file, are single-threaded decoders, and run interleaved; medians are taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from bench.common import log, median, ratio, timed
from stream.sampling import sample_frames


def ours(path: Path) -> int:
    return sum(1 for _ in sample_frames(str(path), mode="keyframes", allow_local=True))


def plain(path: Path, convert: bool) -> int:
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        for frame in container.decode(stream):
            if convert:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n


def measure_sampling(path: Path, seconds: float, repeats: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"ours": [], "plain_convert": [], "plain_decode": []}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in (
            ("ours", lambda: ours(path)),
            ("plain_convert", lambda: plain(path, convert=True)),
            ("plain_decode", lambda: plain(path, convert=False)),
        ):
            counts[name], t = timed(fn)
            times[name].append(t)
    med = {k: median(v) for k, v in times.items()}
    log(f"sampling: {med}")
    if len(set(counts.values())) != 1:
        log(f"WARNING: keyframe counts differ: {counts}")
    return {
        "sampling_ratio": ratio(med["ours"], med["plain_decode"]),
        "sampling_ratio_vs_plain_convert": ratio(med["ours"], med["plain_convert"]),
        "sampling_s": med["ours"],
        "plain_keyframe_convert_s": med["plain_convert"],
        "plain_keyframe_decode_only_s": med["plain_decode"],
        "sampling_keyframes": counts,
        "sampling_file_s": seconds,
        "sampling_repeats": repeats,
    }
