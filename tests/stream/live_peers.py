"""Real live peers for the live-source tests, as child processes on 127.0.0.1, stopped by PID.

An RTSP server (gst-rtsp-server through the system Python's ``gi``, see ``rtsp_server.py``), an HTTP
MJPEG server (the ffmpeg CLI with ``-listen 1``), and live HLS: the ffmpeg CLI writing a playlist and
segments into a directory, served by ``python -m http.server``. They come from Debian packages; when
they are missing ``require_live_peers`` fails the test with the package names (a missing peer is a
broken setup, not a reason to skip).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.live_peers import SYSTEM_PYTHON, ChildProcess, RtspCamera, is_listening

DEBIAN_PACKAGES = (
    "ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
    "gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
_GI_CHECK = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')"


def require_live_peers() -> None:
    """Fail (not skip) the calling test when ffmpeg or the system Python's GstRtspServer is missing."""
    missing = []
    if shutil.which("ffmpeg") is None:
        missing.append("the ffmpeg CLI")
    gi_ok = Path(SYSTEM_PYTHON).exists() and (
        subprocess.run([SYSTEM_PYTHON, "-c", _GI_CHECK], capture_output=True, timeout=30).returncode == 0
    )
    if not gi_ok:
        missing.append(f"GstRtspServer for {SYSTEM_PYTHON}")
    if missing:
        pytest.fail(
            f"live-source peers missing ({', '.join(missing)}): install the Debian packages "
            f"{DEBIAN_PACKAGES} (scripts/system-deps.sh does)",
            pytrace=False,
        )


class RtspServer(RtspCamera):
    """The benchmarks' RTSP camera; a server that does not come up fails the test."""

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        try:
            super().start(timeout_s)
        except RuntimeError as e:
            pytest.fail(str(e))
        return self


class MjpegServer(ChildProcess):
    """``ffmpeg -listen 1`` serving ``clip`` looped as multipart JPEG at ``url`` (one client, then exits)."""

    def __init__(self, clip: Path, port: int, log: Path) -> None:
        super().__init__()
        self.clip, self.port, self.log = clip, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def start(self, timeout_s: float = 15.0) -> MjpegServer:
        args = [
            "ffmpeg", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", str(self.clip),
            "-an", "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", self.url,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if is_listening(self.port):  # not by connecting: -listen 1 would serve that one client
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"ffmpeg MJPEG server did not listen on port {self.port}: {self.log.read_text()[-2000:]}")


class HlsProducer(ChildProcess):
    """``ffmpeg`` writing ``clip`` (H.264, a keyframe every second), looped in real time, as a live HLS
    playlist ``live.m3u8`` of ``SEGMENT_S``-second segments in ``root`` (the last 6 listed, older ones
    deleted, no end tag)."""

    SEGMENT_S = 2

    def __init__(self, clip: Path, root: Path, log: Path) -> None:
        super().__init__()
        self.clip, self.root, self.log = clip, root, log
        self.playlist = root / "live.m3u8"

    def start(self, timeout_s: float = 15.0) -> HlsProducer:
        """Launch it and wait until the playlist lists a segment; fails the test if it does not."""
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            "ffmpeg", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", str(self.clip),
            "-an", "-c:v", "copy", "-f", "hls", "-hls_time", str(self.SEGMENT_S), "-hls_list_size", "6",
            "-hls_flags", "delete_segments+omit_endlist+temp_file", str(self.playlist),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.playlist.exists() and ".ts" in self.playlist.read_text():
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"ffmpeg wrote no HLS playlist in {timeout_s} s: {self.log.read_text()[-2000:]}")


class StaticHttpServer(ChildProcess):
    """``python -m http.server`` serving ``root`` on 127.0.0.1:``port``; ``start()`` again after ``kill()``
    brings it back on the same port."""

    def __init__(self, root: Path, port: int, log: Path) -> None:
        super().__init__()
        self.root, self.port, self.log = root, port, log

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self, timeout_s: float = 15.0) -> StaticHttpServer:
        args = [
            sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(self.root),
            str(self.port),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if is_listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"http.server did not listen on port {self.port}: {self.log.read_text()[-2000:]}")
