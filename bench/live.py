"""``python -m bench live``: how many concurrent 1-fps live streams this machine sustains, and the latency
from a frame's capture to its tokens being queryable.

One real RTSP camera (gst-rtsp-server, shared media: every client gets the same feed) plays a looping
320x240 clip. The embedded runtime (in-memory Redis, in-process encode pool, the configured model) runs
a ``LiveSupervisor`` as ``vidmem serve`` does, and N streams of that camera are registered. For each N
in the ladder, after a warm-up, every frame's latency is measured at the moment ``TokenMemory.append``
returns (capture wall time -> queryable). N is *sustained* when p95 latency < 2 s and no frame was
dropped. The result names the largest sustained N and the latency p50/p95 per N.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import emit, log, machine_info, table
from bench.live_peers import RtspCamera, looping_clip
from bench.redis_server import free_port
from core.settings import Settings
from model.slots import EncodedFrame
from workers import service
from workers.dispatch import runtime_for
from workers.live import LiveSupervisor
from workers.runtime import Runtime
from workers.tenants import LOCAL_TENANT

LAG_LIMIT_S = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny")
    p.add_argument("--ladder", default="1,2,4,8,12,16,24,32,48,64", help="stream counts to try, in order")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per step (after warm-up)")
    p.add_argument("--warmup", type=float, default=6.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", action="store_true")


class AppendLatencies:
    """Capture -> queryable latency of every appended frame, recorded where the append returns."""

    def __init__(self, rt: Runtime) -> None:
        self.values: list[float] = []
        self.since = float("inf")
        self._lock = threading.Lock()
        append = rt.memory.append

        def timed_append(sid: str, frames: Sequence[EncodedFrame]) -> int:
            out = append(sid, frames)
            now = time.time()
            with self._lock:
                walls = [f.wall_time for f in frames if f.wall_time is not None]
                self.values += [now - w for w in walls if w >= self.since]
            return out

        rt.memory.append = timed_append  # type: ignore[method-assign]

    def start(self) -> None:
        with self._lock:
            self.values, self.since = [], time.time()

    def take(self) -> list[float]:
        with self._lock:
            out, self.since = self.values, float("inf")
            return out


def _dropped(rt: Runtime, sids: list[str]) -> int:
    return sum(rt.live.status(s).frames_dropped for s in sids)


def _step(rt: Runtime, lat: AppendLatencies, url: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    sids = [
        service.create_live_stream(rt, LOCAL_TENANT, url, fps=1.0, name=f"cam{i}", check=False)
        for i in range(n)
    ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(rt.memory.next_seq(s) > 0 for s in sids):
        time.sleep(0.2)
    time.sleep(args.warmup)
    dropped0 = _dropped(rt, sids)
    lat.start()
    time.sleep(args.seconds)
    values = np.array(lat.take())
    dropped = _dropped(rt, sids) - dropped0
    views = [service.stream_view(rt, LOCAL_TENANT, s) for s in sids]
    states = {st: sum(v["state"] == st for v in views) for st in {v["state"] for v in views}}
    errors = sorted({v["last_error"] for v in views if v["last_error"]})[:3]
    for s in sids:
        service.delete_stream(rt, LOCAL_TENANT, s, purge=True)
    time.sleep(2 * rt.settings.live_heartbeat_s + 1)  # readers let go of purged streams
    expected = n * args.seconds  # 1 fps per stream
    p50 = float(np.percentile(values, 50)) if values.size else None
    p95 = float(np.percentile(values, 95)) if values.size else None
    ok = bool(values.size >= 0.8 * expected and dropped == 0 and p95 is not None and p95 < LAG_LIMIT_S)
    return {"streams": n, "frames": int(values.size), "expected_frames": int(expected), "dropped": dropped,
            "latency_p50_s": p50, "latency_p95_s": p95, "sustained": ok, "states": states,
            "errors": errors}  # fmt: skip


def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="vidmem-bench-live-"))
    cam = RtspCamera(looping_clip(work, minutes=30), free_port(), work / "rtsp.log").start()
    settings = Settings(redis_url=None, model=args.model, device=args.device, dtype=args.dtype,
                        live_max_streams=10_000)  # fmt: skip
    rt = runtime_for(settings, trusted_urls=True)  # the benchmark's own camera, on loopback
    rt.backend()  # load the model before timing anything
    lat = AppendLatencies(rt)
    sup = LiveSupervisor(rt).start()
    steps: list[dict[str, Any]] = []
    try:
        for n in (int(x) for x in args.ladder.split(",")):
            step = _step(rt, lat, cam.url, n, args)
            steps.append(step)
            log(f"{n} streams: p50 {step['latency_p50_s']}, p95 {step['latency_p95_s']}, "
                f"dropped {step['dropped']}, frames {step['frames']}/{step['expected_frames']}")  # fmt: skip
            if not step["sustained"]:
                break
    finally:
        sup.stop()
        rt.close()
        cam.stop()
    sustained = [s for s in steps if s["sustained"]]
    best = sustained[-1] if sustained else None
    result = {
        "benchmark": "live",
        "model": args.model,
        "machine": machine_info(),
        "lag_limit_s": LAG_LIMIT_S,
        "max_streams_sustained": best["streams"] if best else 0,
        "latency_p50_s": best["latency_p50_s"] if best else None,
        "latency_p95_s": best["latency_p95_s"] if best else None,
        "steps": steps,
    }
    keys = ("streams", "latency_p50_s", "latency_p95_s", "dropped", "sustained")
    rows = [[s[k] for k in keys] for s in steps]
    header = ["streams", "p50 s", "p95 s", "dropped", "ok"]
    emit(result, args.json, table("live streams (1 fps each)", header, rows))
    return 0
