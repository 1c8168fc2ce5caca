"""``python -m bench webrtc``: WebRTC frame-to-memory latency, from a real browser, per camera resolution.

The vidmem app runs in this process (embedded mode, uvicorn on 127.0.0.1, the configured model), so the
latency is taken where ``TokenMemory.append`` returns, as ``bench live`` does: from the moment aiortc
handed the decoded frame to the stream's reader (its ``wall_time``) to the moment its tokens are in the
memory and queryable. For each size, headless Chromium (a real browser, started by PID) sends a fake
camera that plays a real clip at that size, through a minimal page script (getUserMedia, vanilla-ICE
offer to ``POST /v1/webrtc/offer``). After a warm-up, latencies are collected for ``--seconds``.

Also reported: the resolution the server received (the answer's bitrate hints should make the browser
send full resolution at once), frames sampled/dropped, and the ratio of the 1280x720 latency to the
640x360 one (measured side by side in one run). The browser-to-server leg (capture, VP8 encode, loopback
UDP) is not in the figure: it happens before ``wall_time`` is taken (about 36 ms on loopback).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from api.main import create_app
from bench.browser import Chromium, fake_camera
from bench.common import emit, log, machine_info, ratio, table
from bench.live import AppendLatencies
from bench.redis_server import free_port
from core.settings import Settings
from workers.dispatch import runtime_for

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "big_buck_bunny_60s_640x360.mp4"

SENDER_JS = """
async ([fps]) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 1920}}, audio: false});
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok();
    setTimeout(ok, 3000);
  });
  const r = await fetch("/v1/webrtc/offer", {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer", fps, name: "bench"})});
  const answer = await r.json();
  if (!r.ok) throw new Error(JSON.stringify(answer));
  await pc.setRemoteDescription({type: "answer", sdp: answer.sdp});
  window._pc = pc;
  return answer.stream_id;
}
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny")
    p.add_argument("--sizes", default="640x360,1280x720", help="camera sizes, WxH, comma-separated")
    p.add_argument("--fps", type=float, default=2.0, help="frames kept per second")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per size (after warm-up)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--clip", type=Path, default=None, help="source of the fake camera (default: shared clip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", action="store_true")


def _clip(work: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    if SHARED_CLIP.exists():
        return SHARED_CLIP
    from bench.live_peers import looping_clip

    return looping_clip(work, minutes=0.5, size="640x360", fps=25)


class _Server:
    """The app on uvicorn in a thread of this process (so the latency hook sees the appends)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _measure(server: _Server, lat: AppendLatencies, camera: Path, work: Path, args: argparse.Namespace,
             size: str) -> dict[str, Any]:  # fmt: skip
    from playwright.sync_api import sync_playwright

    browser = Chromium(camera, work / f"chromium-{size}.log").start()
    try:
        with sync_playwright() as pw:
            b = pw.chromium.connect_over_cdp(browser.cdp_url)
            page = b.contexts[0].new_page()
            page.goto(f"{server.base}/healthz")  # a secure context (localhost) of the server's origin
            sid = page.evaluate(SENDER_JS, [args.fps])
            time.sleep(args.warmup)
            view0 = httpx.get(f"{server.base}/v1/streams/{sid}").json()
            lat.start()
            time.sleep(args.seconds)
            values = np.array(lat.take())
            view = httpx.get(f"{server.base}/v1/streams/{sid}").json()
            httpx.delete(f"{server.base}/v1/streams/{sid}")
            b.close()
    finally:
        browser.stop()

    def p(q: float) -> float | None:
        return float(np.percentile(values, q)) if values.size else None

    return {
        "size": size, "received": view["resolution"], "frames": int(values.size),
        "expected_frames": int(args.seconds * args.fps),
        "dropped": view["frames_dropped"] - view0["frames_dropped"],
        "latency_p50_s": p(50), "latency_p95_s": p(95), "state": view["state"],
    }  # fmt: skip


def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="vidmem-bench-webrtc-"))
    clip = _clip(work, args.clip)
    settings = Settings(
        redis_url=None, model=args.model, device=args.device, dtype=args.dtype, budget=100_000
    )  # fmt: skip  (no merges while measuring)
    rt = runtime_for(settings)
    rt.backend()  # load the model before timing anything
    lat = AppendLatencies(rt)
    steps = []
    with _Server(create_app(settings, rt)) as server:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            camera = fake_camera(clip, work / f"cam-{size}.mjpeg", (w, h))
            step = _measure(server, lat, camera, work, args, size)
            steps.append(step)
            log(f"{size}: received {step['received']}, p50 {step['latency_p50_s']}, p95 "
                f"{step['latency_p95_s']}, frames {step['frames']}/{step['expected_frames']}")  # fmt: skip
    by = {s["size"]: s for s in steps}
    small, large = by.get("640x360"), by.get("1280x720")
    result = {
        "benchmark": "webrtc",
        "model": args.model,
        "fps": args.fps,
        "machine": machine_info(),
        "steps": steps,
        "p50_ratio_720p_360p": ratio(
            large["latency_p50_s"] if large else None, small["latency_p50_s"] if small else None
        ),
    }
    keys = ("size", "received", "latency_p50_s", "latency_p95_s", "frames", "dropped")
    rows = [[s[k] for k in keys] for s in steps]
    emit(result, args.json, table("WebRTC frame -> memory", ["camera", "received", "p50 s", "p95 s",
                                                             "frames", "dropped"], rows))  # fmt: skip
    return 0
