"""stream.demo: the sample video of ``vidmem ask --demo``, made with PyAV, once."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np

from stream.demo import FPS, HEIGHT, SCENE_S, SCENES, WIDTH, demo_video, draw_text, frame_at


def test_the_demo_is_thirty_seconds_of_distinct_captioned_scenes(tmp_path: Path) -> None:
    path = demo_video(tmp_path / "cache")
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == len(SCENES) * SCENE_S * FPS == 300
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    middles = [frames[(n * SCENE_S + SCENE_S // 2) * FPS].astype(np.int16) for n in range(len(SCENES))]
    for a, b in itertools.pairwise(middles):
        assert np.abs(a - b).mean() > 10  # each scene looks different
    moving = frames[FPS].astype(np.int16), frames[3 * FPS].astype(np.int16)
    assert np.abs(moving[0] - moving[1]).mean() > 0.5  # and moves within itself
    caption = frames[FPS][HEIGHT - 24 : HEIGHT - 10, 8:200]
    assert ((caption[..., 0] > 200) & (caption[..., 1] > 200) & (caption[..., 2] < 80)).sum() > 100  # yellow


def test_the_demo_is_made_once_and_reused(tmp_path: Path) -> None:
    path = demo_video(tmp_path)
    mtime = path.stat().st_mtime_ns
    assert demo_video(tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_text_is_drawn_clipped_at_the_edges() -> None:
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    draw_text(img, "AB?~", 20, 10, 2, (255, 255, 255))  # runs off the right and bottom edges
    assert img.max() == 255
    assert frame_at(0).shape == (HEIGHT, WIDTH, 3)
