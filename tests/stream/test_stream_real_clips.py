"""Sampling the real clips in ../shared/testdata (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.sampling import sample_frames


def test_campus_avi_fps_uses_frame_timestamps(real_clips_dir: Path) -> None:
    # H.264 with B-frames in AVI: PyAV's frame.pts are in decode order; the timeline must still be right.
    frames = list(
        sample_frames(str(real_clips_dir / "campus_surveillance_480x360.avi"), allow_local=True, fps=1.0)
    )
    t = np.array([f.pts for f in frames])
    assert 78 <= len(frames) <= 81
    assert t[0] == 0.0 and 78.5 <= t[-1] <= 80.0
    assert np.all(np.diff(t) > 0.5) and np.all(np.diff(t) < 1.5)
    assert np.allclose(t, np.round(t), atol=0.15)  # 10 fps source: every target has a frame within 0.1 s
    assert frames[0].image.shape == (360, 480, 3)


def test_campus_avi_keyframes(real_clips_dir: Path) -> None:
    frames = list(
        sample_frames(
            str(real_clips_dir / "campus_surveillance_480x360.avi"), allow_local=True, mode="keyframes"
        )
    )
    assert [round(f.pts, 1) for f in frames] == [0.0, 25.0, 50.0, 75.0]
    assert all(f.keyframe for f in frames)


def test_big_buck_bunny_keyframes_and_size(real_clips_dir: Path) -> None:
    frames = list(
        sample_frames(
            str(real_clips_dir / "big_buck_bunny_60s_640x360.mp4"),
            allow_local=True,
            mode="keyframes",
            size=(384, 384),
        )
    )
    t = [f.pts for f in frames]
    assert len(frames) >= 5 and t[0] == 0.0 and t == sorted(t) and t[-1] < 60.2
    assert all(f.image.shape == (384, 384, 3) for f in frames)


def test_traffic_ntsc_rate_at_2fps(real_clips_dir: Path) -> None:
    frames = list(sample_frames(str(real_clips_dir / "slow_traffic_small.mp4"), allow_local=True, fps=2.0))
    t = np.array([f.pts for f in frames])
    assert 60 <= len(frames) <= 62
    targets = np.arange(len(t)) / 2
    assert np.all(t >= targets - 1e-6) and np.all(t - targets < 1 / 29.97 + 1e-6)  # first frame at/after each
