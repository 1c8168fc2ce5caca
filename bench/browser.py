"""A real browser as a WebRTC sender, for the web-page tests and the WebRTC benchmark.

Headless Chromium (Debian packages ``chromium``, ``chromium-driver``; ``scripts/system-deps.sh`` installs
them) is started directly, by PID, with a fake camera that plays a real clip, and a DevTools port on
127.0.0.1 that Playwright connects to (``connect_over_cdp``: no browser download). Owning the process
lets a test SIGKILL the browser, as when a laptop lid closes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.live_peers import ChildProcess
from bench.redis_server import free_port

CHROMIUM = Path("/usr/lib/chromium/chromium")
"""The real binary (the /usr/bin wrapper adds flags of its own)."""


def fake_camera(clip: Path, out: Path, size: tuple[int, int] = (640, 360), seconds: float = 8) -> Path:
    """An MJPEG file of ``clip`` at ``size`` and 25 fps for Chromium's fake camera (it loops the file).
    MJPEG keeps it small: a Y4M of 8 s at 1280x720 is about 280 MB."""
    w, h = size
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(clip),
         "-t", str(seconds), "-vf", f"scale={w}:{h},fps=25", "-q:v", "4", str(out)],
        check=True,
    )  # fmt: skip
    return out


class Chromium(ChildProcess):
    """Headless Chromium whose camera is ``camera`` (an MJPEG or Y4M file), with a DevTools endpoint."""

    def __init__(self, camera: Path, log: Path) -> None:
        super().__init__()
        self.camera, self.log = camera, log
        self.port = free_port()
        self._profile = tempfile.TemporaryDirectory(prefix="vidmem-chromium-")

    @property
    def cdp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> Chromium:
        if not CHROMIUM.exists():
            raise RuntimeError(f"{CHROMIUM} is missing: install the Debian packages chromium chromium-driver")
        args = [
            str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={self._profile.name}", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={self.camera}",
            "--auto-accept-this-tab-capture", "--auto-select-desktop-capture-source=Entire screen",
            "--disable-features=WebRtcHideLocalIpsWithMdns", "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={self.port}", "--window-size=1400,1000", "about:blank",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.cdp_url}/json/version", timeout=1) as r:
                    json.load(r)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Chromium did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the browser and its helpers (renderer, GPU, network processes): one process group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._profile.cleanup()
