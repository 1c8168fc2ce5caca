"""Frame sampling on synthetic clips: keyframes, fps targets, VFR, sizes, seq numbers, damage."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import av.error
import numpy as np
import pytest

import stream.sampling
from stream.errors import CorruptVideo, ForbiddenUrl, NoVideoStream
from stream.frames import Frame
from stream.sampling import FrameSelector, TimestampGuesser, sample_frames
from tests.stream.clips import Clips, garble, make_clip, make_vfr_clip, truncate


def times(frames: list[Frame]) -> list[float]:
    return [round(f.pts, 3) for f in frames]


def sample(path: Path, **kwargs: object) -> list[Frame]:
    return list(sample_frames(str(path), allow_local=True, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_keyframes_exactly_at_gop(tmp_path: Path, codec: str) -> None:
    path = make_clip(tmp_path / f"k_{codec}.mp4", seconds=5, fps=25, gop=10, codec=codec)
    frames = sample(path, mode="keyframes")
    assert times(frames) == [round(0.4 * i, 3) for i in range(13)]  # frame 0, 10, 20, ... 120
    assert all(f.keyframe for f in frames)


def test_keyframes_one_second_gop(clips: Clips) -> None:
    frames = sample(clips.cfr, mode="keyframes")
    assert times(frames) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_fps_1_on_25fps_clip(clips: Clips) -> None:
    frames = sample(clips.cfr, mode="fps", fps=1.0)
    assert times(frames) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [f.keyframe for f in frames] == [True] * 5  # GOP 1 s: every target lands on a keyframe


def test_fps_2_gives_ten_frames(clips: Clips) -> None:
    frames = sample(clips.cfr, mode="fps", fps=2.0)
    assert len(frames) == 10
    # Targets k/2 s; 0.5 s is not a multiple of 1/25 s, so the first frame after it (0.52 s) is taken.
    assert times(frames) == [0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52, 4.0, 4.52]


def test_fps_above_native_rate_never_duplicates(clips: Clips) -> None:
    frames = sample(clips.gop10, mode="fps", fps=100.0)
    assert len(frames) == 125
    assert np.allclose([f.pts for f in frames], np.arange(125) / 25)


VFR_TIMES = [0.0, 0.1, 0.15, 0.9, 1.05, 1.06, 2.7, 3.0, 3.5, 4.2]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize(
    ("fps", "expected"),
    [
        (1.0, [0.0, 1.05, 2.7, 3.0, 4.2]),  # target 2 s falls in the 1.06-2.7 gap: skipped, not repeated
        (2.0, [0.0, 0.9, 1.05, 2.7, 3.0, 3.5, 4.2]),
    ],
)
def test_fps_on_vfr_clip(tmp_path: Path, suffix: str, fps: float, expected: list[float]) -> None:
    path = make_vfr_clip(tmp_path / f"vfr{suffix}", VFR_TIMES)
    assert times(sample(path, mode="fps", fps=fps)) == expected


def test_fps_on_vfr_rate_change(tmp_path: Path) -> None:
    # 30 fps for 2 s, then 5 fps for 2 s, then a 3 s hole, then 1 s at 10 fps.
    pts = [i / 30 for i in range(60)] + [2 + i / 5 for i in range(10)] + [7 + i / 10 for i in range(10)]
    frames = sample(make_vfr_clip(tmp_path / "vfr2.mp4", pts), mode="fps", fps=1.0)
    t = [f.pts for f in frames]
    assert times(frames) == [0.0, 1.0, 2.0, 3.0, 7.0]
    assert all(a < b for a, b in itertools.pairwise(t))
    assert len({int(x) for x in t}) == len(t)  # at most one frame per 1 s target


def test_size_seq_and_start_seq(clips: Clips) -> None:
    frames = sample(clips.cfr, mode="fps", fps=2.0, size=(384, 384), start_seq=7)
    assert [f.seq for f in frames] == list(range(7, 17))
    for f in frames:
        assert f.image.shape == (384, 384, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous and f.wall_time is None
    native = sample(clips.cfr, mode="keyframes")
    assert native[0].image.shape == (64, 96, 3) and [f.seq for f in native] == [0, 1, 2, 3, 4]


def test_size_is_width_height(clips: Clips) -> None:
    frames = sample(clips.cfr, mode="keyframes", size=(50, 30))
    assert frames[0].image.shape == (30, 50, 3)


def test_image_is_rgb_of_the_encoded_picture(tmp_path: Path) -> None:
    # The synthetic clip's red channel is a horizontal ramp, its green a vertical one.
    img = sample(make_clip(tmp_path / "big.mp4", seconds=1, size=(128, 128)), mode="keyframes")[0].image
    red_row = img[64, :, 0].astype(int)
    green_col = img[:, 64, 1].astype(int)
    assert np.corrcoef(red_row[:60], np.arange(60))[0, 1] > 0.95
    assert np.corrcoef(green_col[:60], np.arange(60))[0, 1] > 0.95


def test_audio_track_is_ignored(clips: Clips) -> None:
    assert times(sample(clips.with_audio, mode="fps", fps=1.0)) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_bad_arguments_raise_at_call_time(clips: Clips) -> None:
    src = str(clips.cfr)
    for kwargs in (
        {"mode": "all"},
        {"fps": 0.0},
        {"fps": float("nan")},
        {"size": (0, 10)},
        {"size": (10,)},
        {"start_seq": -1},
    ):
        with pytest.raises(ValueError):
            sample_frames(src, allow_local=True, **kwargs)


def test_generator_closes_container_when_abandoned(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    real_open = av.open

    def spy_open(*args: object, **kwargs: object) -> object:
        container = real_open(*args, **kwargs)  # type: ignore[call-overload]
        real_close = container.close

        class Proxy:
            def __getattr__(self, name: str) -> object:
                return getattr(container, name)

            def close(self) -> None:
                closed.append(True)
                real_close()

        return Proxy()

    monkeypatch.setattr(av, "open", spy_open)
    gen = sample_frames(str(clips.cfr), allow_local=True, mode="fps", fps=5)
    assert next(gen).seq == 0
    gen.close()
    assert closed == [True]


def test_same_frames_on_every_read(clips: Clips) -> None:
    """(Was aiter_frames' test: the one file interface is sample_frames.)"""
    kwargs = {"mode": "fps", "fps": 3.0, "size": (48, 32), "allow_local": True, "start_seq": 5}
    expected = list(sample_frames(str(clips.cfr), **kwargs))  # type: ignore[arg-type]
    got = list(sample_frames(str(clips.cfr), **kwargs))  # type: ignore[arg-type]
    assert [(f.seq, f.pts, f.keyframe) for f in got] == [(f.seq, f.pts, f.keyframe) for f in expected]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected, strict=True))


def test_errors_reach_the_consumer(clips: Clips) -> None:
    with pytest.raises(ForbiddenUrl):
        for _ in sample_frames("file:///etc/passwd"):
            pass
    with pytest.raises(NoVideoStream):
        for _ in sample_frames(str(clips.audio_only), allow_local=True):
            pass


def test_damaged_middle_is_skipped_not_fatal(
    clips: Clips, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = garble(clips.cfr, tmp_path / "mid.mp4", 0.4, 0.6)
    with caplog.at_level(logging.WARNING, logger="stream.sampling"):
        frames = sample(damaged, mode="fps", fps=2.0)
    t = times(frames)
    assert t[:4] == [0.0, 0.52, 1.0, 1.52] and t[-2:] == [4.0, 4.52]  # both ends survive
    assert 4 <= len(frames) < 10
    assert "undecodable packets" in caplog.text


def test_truncated_faststart_file_ends_early_with_warning(
    clips: Clips, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cut = truncate(clips.faststart, tmp_path / "cut.mp4", 0.5)
    with caplog.at_level(logging.WARNING, logger="stream.sampling"):
        frames = sample(cut, mode="fps", fps=1.0)
    assert 1 <= len(frames) < 5 and times(frames) == [float(i) for i in range(len(frames))]
    assert "truncated?" in caplog.text


def test_read_error_after_frames_stops_cleanly(
    clips: Clips, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = stream.sampling._timed_frames

    def failing(*args: object, **kwargs: object) -> Iterator[object]:
        for i, item in enumerate(real(*args, **kwargs)):  # type: ignore[arg-type]
            if i == 60:  # 2.4 s in
                raise av.error.OSError(5, "Input/output error", "http://u:secret@h/x")
            yield item

    monkeypatch.setattr(stream.sampling, "_timed_frames", failing)
    with caplog.at_level(logging.WARNING, logger="stream.sampling"):
        frames = sample(clips.cfr, mode="fps", fps=1.0)
    assert times(frames) == [0.0, 1.0, 2.0]
    assert "stopped reading" in caplog.text and "secret" not in caplog.text


def test_read_error_before_any_frame_raises(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> Iterator[object]:
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
        yield  # pragma: no cover

    monkeypatch.setattr(stream.sampling, "_timed_frames", failing)
    with pytest.raises(CorruptVideo):
        sample(clips.cfr)


def test_frame_selector_targets() -> None:
    keep = FrameSelector(1.0)
    t = [0.0, 0.4, 0.99, 1.0, 1.5, 3.7, 3.9, 4.0, 3.95, 4.0, 6.0]
    assert [x for x in t if keep(x)] == [0.0, 1.0, 3.7, 4.0, 6.0]


def test_frame_selector_without_rate_drops_non_increasing_times() -> None:
    keep = FrameSelector(None)
    assert [x for x in [0.0, 1.0, 1.0, 0.5, 2.0] if keep(x)] == [0.0, 1.0, 2.0]


def test_timestamp_guesser_repairs_avi_decode_order_pts() -> None:
    # What PyAV gives for H.264 with B-frames in AVI (campus clip): pts in decode order, dts increasing.
    pts = [1, 4, 3, 5, 2, 8, 7, 9, 6, 12]
    dts = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    guess = TimestampGuesser()
    out = [guess(p, d) for p, d in zip(pts, dts, strict=True)]
    assert out[:2] == [1, 4] and out[2:] == dts[2:]  # switches to dts after the first misordered pts
    guess = TimestampGuesser()
    assert [guess(p, None) for p in [0, 512, 1024]] == [0, 512, 1024]
    assert TimestampGuesser()(None, None) is None


def test_corrupt_every_frame_is_corrupt_video(clips: Clips, tmp_path: Path) -> None:
    with pytest.raises(CorruptVideo, match="no frame"):
        sample(garble(clips.cfr, tmp_path / "all.mp4"))
