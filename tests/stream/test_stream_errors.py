"""Every way a source can fail maps to the right typed SourceError, with a message free of credentials."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from stream.errors import CorruptVideo, ForbiddenUrl, NotAVideo, NoVideoStream, SourceError, UnreachableSource
from stream.probe import probe
from stream.sampling import sample_frames
from tests.stream.clips import Clips, garble, truncate
from tests.stream.servers import HttpServer


def first_error(src: str, **kwargs: object) -> SourceError:
    """Run sample_frames to the end and return the SourceError it raised (fails if none)."""
    with pytest.raises(SourceError) as info:
        list(sample_frames(src, **kwargs))  # type: ignore[arg-type]
    return info.value


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any call to av.open fail the test: forbidden sources must be refused before FFmpeg."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"av.open called with {args}")

    monkeypatch.setattr(av, "open", boom)


@pytest.mark.usefixtures("no_ffmpeg")
@pytest.mark.parametrize(
    "src",
    [
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
        "subfile,,start,0,end,100,,:/etc/passwd",
        "data:video/mp4;base64,AAAAIGZ0eXA=",
        "FILE:///etc/passwd",
        "pipe:0",
        "/etc/passwd",  # a local path, but allow_local is off
    ],
)
def test_forbidden_before_ffmpeg(src: str) -> None:
    with pytest.raises(ForbiddenUrl):
        sample_frames(src)  # raised at call time, not at the first next()
    with pytest.raises(ForbiddenUrl):
        probe(src)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert isinstance(first_error(str(path), allow_local=True), NotAVideo)
    with pytest.raises(NotAVideo):
        probe(str(path), allow_local=True)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    assert isinstance(first_error(str(path), allow_local=True), NotAVideo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / f"random{seed}.mp4"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert isinstance(first_error(str(path), allow_local=True), NotAVideo)


def test_truncated_mp4_without_index_is_corrupt(clips: Clips, tmp_path: Path) -> None:
    # The index (moov) is at the end, so half a file cannot be parsed; the ftyp header says it was an MP4.
    cut = truncate(clips.cfr, tmp_path / "cut.mp4", 0.5)
    err = first_error(str(cut), allow_local=True)
    assert isinstance(err, CorruptVideo) and "truncated" in str(err)


def test_garbled_frames_are_corrupt(clips: Clips, tmp_path: Path) -> None:
    err = first_error(str(garble(clips.cfr, tmp_path / "garbled.mp4")), allow_local=True)
    assert isinstance(err, CorruptVideo)
    err = first_error(
        str(garble(clips.faststart, tmp_path / "garbled_fs.mp4")), allow_local=True, mode="keyframes"
    )
    assert isinstance(err, CorruptVideo)


def test_audio_only(clips: Clips) -> None:
    err = first_error(str(clips.audio_only), allow_local=True)
    assert isinstance(err, NoVideoStream) and "audio" in str(err)
    with pytest.raises(NoVideoStream):
        probe(str(clips.audio_only), allow_local=True)


def test_missing_local_file(tmp_path: Path) -> None:
    assert isinstance(first_error(str(tmp_path / "gone.mp4"), allow_local=True), UnreachableSource)


def test_uploaded_playlist_is_refused(tmp_path: Path, clips: Clips) -> None:
    # An upload must not make FFmpeg read other local files (format_whitelist excludes hls/concat).
    playlist = tmp_path / "upload.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5,\n{clips.cfr}\n#EXT-X-ENDLIST\n")
    assert isinstance(first_error(str(playlist), allow_local=True), NotAVideo)
    script = tmp_path / "upload.ffconcat"
    script.write_text(f"ffconcat version 1.0\nfile '{clips.cfr}'\n")
    assert isinstance(first_error(str(script), allow_local=True), NotAVideo)


def test_closed_port_is_unreachable_quickly(closed_port: int) -> None:
    start = time.monotonic()
    err = first_error(f"http://user:hunter2@127.0.0.1:{closed_port}/a.mp4?token=t0k3n", timeout_s=5)
    assert isinstance(err, UnreachableSource)
    assert time.monotonic() - start < 2.0
    assert "hunter2" not in str(err) and "t0k3n" not in str(err) and "127.0.0.1" in str(err)
    assert err.__cause__ is None and err.__suppress_context__  # the raw URL is not chained along


def test_silent_server_times_out(silent_port: int) -> None:
    start = time.monotonic()
    err = first_error(f"http://127.0.0.1:{silent_port}/a.mp4", timeout_s=0.5)
    assert isinstance(err, UnreachableSource)
    assert time.monotonic() - start < 3.0


def test_http_text_file_is_not_a_video(http_server: HttpServer) -> None:
    (http_server.root / "page.mp4").write_text("<html>not a video</html>\n" * 40)
    assert isinstance(first_error(http_server.url("page.mp4")), NotAVideo)


def test_http_404_is_unreachable(http_server: HttpServer) -> None:
    url = http_server.url("missing.mp4").replace("http://", "http://me:hunter2@")
    err = first_error(url)
    assert isinstance(err, UnreachableSource) and "hunter2" not in str(err)


def test_http_redirect_to_file_is_forbidden(http_server: HttpServer) -> None:
    assert isinstance(first_error(http_server.url("redirect-file")), ForbiddenUrl)


def test_http_serving_a_clip_works(http_server: HttpServer, clips: Clips) -> None:
    (http_server.root / "clip.mp4").write_bytes(clips.cfr.read_bytes())
    frames = list(sample_frames(http_server.url("clip.mp4"), fps=1.0))
    assert [round(f.pts, 3) for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    info = probe(http_server.url("clip.mp4"))
    assert (info.width, info.height, info.codec) == (96, 64, "h264")


def test_http_connection_dropped_midway_keeps_frames(http_server: HttpServer, clips: Clips) -> None:
    (http_server.root / "fs.mp4").write_bytes(clips.faststart.read_bytes())
    frames = list(sample_frames(http_server.url("cut/fs.mp4"), fps=2.0))
    assert 2 <= len(frames) < 10
    assert [f.seq for f in frames] == list(range(len(frames)))
