"""Real live peers for the live-source tests, as child processes on 127.0.0.1, stopped by PID.

An RTSP server (gst-rtsp-server through the system Python's ``gi``, see ``rtsp_server.py``) and an HTTP
MJPEG server (the ffmpeg CLI with ``-listen 1``). Both come from Debian packages; when they are missing
``require_live_peers`` fails the test with the package names (a missing peer is a broken setup, not a
reason to skip).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
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


def is_listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (from /proc, without connecting to it)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(f[1].endswith(want) and f[3] == "0A" for f in (line.split() for line in lines)):
            return True
    return False


class _Child:
    """A child process owned by a test; ``stop()`` is idempotent and also resumes a SIGSTOPped one."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap it (an abrupt death, as for a crashed camera)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


class RtspServer(_Child):
    """``rtsp_server.py`` serving an H.264 MP4 at ``url`` (rtsp://127.0.0.1:PORT/test), in real time."""

    def __init__(self, clip: Path, port: int, log: Path) -> None:
        super().__init__()
        self.clip, self.port, self.log = clip, port, log

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        """Launch it and wait until the stream opens; fails the test (after stopping it) if it does not."""
        args = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--file", str(self.clip), "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if is_listening(self.port) and self._opens():
                return self
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"RTSP server did not come up on port {self.port}: {self.log.read_text()[-2000:]}")

    def _opens(self) -> bool:
        opts = {"rtsp_transport": "tcp", "analyzeduration": "500000"}
        try:
            av.open(self.url, options=opts, timeout=(3, 3)).close()
        except av.error.FFmpegError:
            return False
        return True


class MjpegServer(_Child):
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
