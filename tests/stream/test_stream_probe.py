"""probe(): header metadata of synthetic and real clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.errors import UnsupportedCodec
from stream.live_check import check_live
from stream.live_types import LiveConfig
from stream.probe import VideoInfo, probe
from stream.sampling import sample_frames
from stream.urls import NetworkPolicy
from tests.stream.clips import Clips, make_unknown_codec, make_vfr_clip
from tests.stream.servers import HttpServer


def test_probe_synthetic(clips: Clips) -> None:
    info = probe(str(clips.cfr), allow_local=True)
    assert info == VideoInfo(duration_s=5.0, fps=25.0, width=96, height=64, codec="h264", has_audio=False)
    assert probe(str(clips.with_audio), allow_local=True).has_audio


def test_probe_vfr(tmp_path: Path) -> None:
    info = probe(str(make_vfr_clip(tmp_path / "v.mkv", [0.0, 0.5, 2.0, 3.0])), allow_local=True)
    assert info.duration_s == pytest.approx(3.0, abs=0.6) and info.width == 96


def test_probe_is_frozen(clips: Clips) -> None:
    info = probe(str(clips.cfr), allow_local=True)
    with pytest.raises(AttributeError):
        info.fps = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "duration", "fps", "size"),
    [
        ("big_buck_bunny_60s_640x360.mp4", 60.0, 24.0, (640, 360)),
        ("campus_surveillance_480x360.avi", 79.6, 10.0, (480, 360)),
        ("slow_traffic_small.mp4", 30.5, 29.97, (640, 360)),
    ],
)
def test_probe_real(
    real_clips_dir: Path, name: str, duration: float, fps: float, size: tuple[int, int]
) -> None:
    info = probe(str(real_clips_dir / name), allow_local=True)
    assert info.duration_s == pytest.approx(duration, abs=0.3)
    assert info.fps == pytest.approx(fps, abs=0.01)
    assert (info.width, info.height) == size
    assert info.codec == "h264" and info.has_audio


def test_a_codec_without_decoder_is_unsupported(tmp_path: Path, http_server: HttpServer) -> None:
    """A video stream FFmpeg finds but cannot decode is UnsupportedCodec (a 4xx), at every opener: the probe
    of a local file and of a URL, sampling, and the live check."""
    clip = make_unknown_codec(http_server.root / "zz.avi")
    url = http_server.url("zz.avi")
    policy = NetworkPolicy(allowed_networks=["127.0.0.1/32"])
    with pytest.raises(UnsupportedCodec, match="codec FFmpeg cannot decode"):
        probe(str(clip), allow_local=True)
    with pytest.raises(UnsupportedCodec):
        probe(url, network_policy=policy)
    with pytest.raises(UnsupportedCodec):
        next(sample_frames(str(clip), allow_local=True))
    with pytest.raises(UnsupportedCodec):
        check_live(url, LiveConfig(network_policy=policy))
