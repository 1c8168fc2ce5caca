"""A real RTSP camera for the live benchmarks: ``bench/rtsp_server.py`` (gst-rtsp-server, run by the system
Python, which has ``gi``) playing a looping clip on 127.0.0.1, started and stopped by PID.

Debian packages: ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{good,bad,ugly}
gstreamer1.0-libav (``scripts/system-deps.sh`` installs them).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import av
import av.error

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def is_listening(port: int, address: str | None = None) -> bool:
    """Whether something listens on TCP ``port`` (of the IPv4 ``address``, if given: any address
    otherwise), from /proc, without connecting to it."""
    want = f":{port:04X}"
    if address is not None:
        want = socket.inet_aton(address)[::-1].hex().upper() + want  # /proc lists IPv4 little-endian
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(f[1].endswith(want) and f[3] == "0A" for f in (line.split() for line in lines)):
            return True
    return False


def looping_clip(workdir: Path, minutes: float, size: str = "320x240", fps: int = 10) -> Path:
    """An H.264 MP4 of ``minutes`` (keyframe every second): one generated minute, looped by stream copy."""
    one = workdir / "minute.mp4"
    out = workdir / "loop.mp4"
    ff = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    subprocess.run([*ff, "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-t", "60",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps), "-pix_fmt", "yuv420p",
                    str(one)], check=True)  # fmt: skip
    loops = max(0, int(minutes) + 1)
    subprocess.run([*ff, "-stream_loop", str(loops), "-i", str(one), "-c", "copy", str(out)], check=True)
    return out


class ChildProcess:
    """A child process of a test or benchmark; ``stop()`` is idempotent and also ends a SIGSTOPped one."""

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


class RtspCamera(ChildProcess):
    """``rtsp_server.py`` serving an H.264 MP4 at ``url`` (rtsp://ADDRESS:PORT/test, ADDRESS 127.0.0.1 unless
    given), paced at real time; with ``login`` ("name:password" as in a URL, %-escapes decoded for the server)
    it requires digest authentication."""

    def __init__(self, clip: Path, port: int, log: Path, address: str = "127.0.0.1", login: str = "") -> None:
        super().__init__()
        self.clip, self.port, self.log, self.address, self.login = clip, port, log, address, login

    @property
    def url(self) -> str:
        """The stream's URL, with the login if there is one."""
        return f"rtsp://{self.login + '@' if self.login else ''}{self.address}:{self.port}/test"

    def clients(self) -> int:
        """RTSP connections the server has accepted so far (start() made some), from its log."""
        return self.log.read_text(errors="replace").count("client connected")

    def start(self, timeout_s: float = 15.0) -> RtspCamera:
        """Launch it and wait until the stream opens; RuntimeError (after stopping it) if it does not."""
        args = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--file", str(self.clip), "--port", str(self.port)]
        args += ["--address", self.address] + (["--user", unquote(self.login)] if self.login else [])
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if is_listening(self.port, self.address) and self._opens():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"RTSP server did not come up on port {self.port}: {self.log.read_text()[-2000:]}")

    def _opens(self) -> bool:
        opts = {"rtsp_transport": "tcp", "analyzeduration": "500000"}
        try:
            av.open(self.url, options=opts, timeout=(3, 3)).close()
        except av.error.FFmpegError:
            return False
        return True
