"""``python -m bench soak``: one RTSP camera read for a long time, with forced disconnects.

A real GStreamer RTSP server plays a looping clip; ``vidmem serve`` (embedded mode, tiny model unless
``--model``) reads it at 1 fps. Every ``minutes / (disconnects + 1)`` the server is SIGKILLed and
restarted ``--outage-s`` later. The stream is sampled every 10 s. At the end, one question over the
whole span and one over the last minute. Prints one JSON object:

  state, gaps_total, gaps (start, end, duration, reason), frames sampled/encoded/dropped, tokens_used
  vs budget (max seen), memory span (first t0, last t1), answer latency and slots used, the server's
  RSS at start and end, and the largest lag (now - last frame time) seen while the camera was up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.live_peers import RtspCamera, looping_clip
from bench.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--disconnects", type=int, default=5)
    p.add_argument("--outage-s", type=float, default=10.0)
    p.add_argument("--model", default="tiny")
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--json", action="store_true", help="print only the JSON result")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="vidmem-soak-"))
    clip = looping_clip(work, minutes=args.minutes + 5)
    cam = RtspCamera(clip, free_port(), work / "rtsp.log").start()
    port = free_port()
    env = os.environ | {
        "VIDMEM_MODEL": args.model,
        "VIDMEM_BUDGET": str(args.budget),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VIDMEM_REDIS_URL", None)
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "vidmem.cli", "serve", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        result = _run(args, base, cam, server.pid)
        result["workdir"] = str(work)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        cam.stop()
        log.close()
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["ok"] else 1


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    keys = ("slots_used", "tokens_used", "prompt_tokens", "latency_s")
    return {"status": status} | {k: body.get(k) for k in keys}


def _wait_up(c: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if c.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("vidmem serve did not start")


@dataclass
class _Watched:
    """What the soak saw while it ran: the forced cuts, the most tokens and the worst lag seen."""

    cuts: list[float] = field(default_factory=list)
    max_tokens: int = 0
    max_lag: float = 0.0
    samples: int = 0


def _watch(args: argparse.Namespace, c: httpx.Client, cam: RtspCamera, sid: str) -> _Watched:
    """Poll the stream every 10 s for ``args.minutes``, cutting the camera ``args.disconnects`` times."""
    total_s = args.minutes * 60
    every = total_s / (args.disconnects + 1)
    start = time.monotonic()
    seen = _Watched()
    camera_up_since = time.monotonic()
    while (now := time.monotonic()) - start < total_s:
        if len(seen.cuts) < args.disconnects and now - start >= every * (len(seen.cuts) + 1):
            cam.kill()
            seen.cuts.append(time.time())
            time.sleep(args.outage_s)
            cam.start()
            camera_up_since = time.monotonic()
        v = c.get(f"/v1/streams/{sid}").json()
        seen.samples += 1
        seen.max_tokens = max(seen.max_tokens, v["tokens_used"])
        if v["state"] == "live" and v["last_frame_time"] and time.monotonic() - camera_up_since > 30:
            seen.max_lag = max(seen.max_lag, time.time() - v["last_frame_time"])
        if not args.json:
            print(f"{(now - start) / 60:5.1f} min {v['state']:12s} sampled={v['frames_sampled']} "
                  f"encoded={v['frames_encoded']} dropped={v['frames_dropped']} gaps={v['gaps_total']} "
                  f"tokens={v['tokens_used']}/{v['budget']}", file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(10)
    return seen


def _run(args: argparse.Namespace, base: str, cam: RtspCamera, pid: int) -> dict[str, Any]:
    c = httpx.Client(base_url=base, timeout=600)
    _wait_up(c)
    r = c.post("/v1/streams", json={"url": cam.url, "fps": 1, "name": "soak"})
    r.raise_for_status()
    sid = r.json()["stream_id"]
    rss_start = _rss_mb(pid)
    seen = _watch(args, c, cam, sid)
    cuts, max_tokens, max_lag, samples = seen.cuts, seen.max_tokens, seen.max_lag, seen.samples
    time.sleep(5)
    v = c.get(f"/v1/streams/{sid}").json()
    mem = c.get(f"/v1/streams/{sid}/memory").json()
    whole = c.post(f"/v1/streams/{sid}/ask", json={"question": "What happened during the whole recording?"})
    last = c.post(f"/v1/streams/{sid}/ask", json={"question": "What happened just now?", "since": "-1m"})
    whole_body, last_body = whole.json(), last.json()
    result = {
        "minutes": args.minutes,
        "disconnects_forced": len(cuts),
        "state": v["state"],
        "gaps_total": v["gaps_total"],
        "gaps": [{k: g[k] for k in ("start", "end", "duration_s", "reason")} for g in v["gaps"]],
        "frames_sampled": v["frames_sampled"],
        "frames_encoded": v["frames_encoded"],
        "frames_dropped": v["frames_dropped"],
        "reconnects": v["reconnects"],
        "budget": v["budget"],
        "tokens_used": v["tokens_used"],
        "max_tokens_used_seen": max_tokens,
        "slots": len(mem["slots"]),
        "memory_span_s": [mem["slots"][0]["t0"], mem["slots"][-1]["t1"]] if mem["slots"] else None,
        "whole_span_answer": _answer(whole.status_code, whole_body),
        "last_minute_answer": _answer(last.status_code, last_body),
        "server_rss_mb": [round(rss_start, 1), round(_rss_mb(pid), 1)],
        "max_lag_s": round(max_lag, 2),
        "samples": samples,
    }  # fmt: skip
    result["ok"] = bool(
        v["state"] == "live"
        and v["gaps_total"] == len(cuts)
        and max_tokens <= v["budget"]
        and whole.status_code == 200
        and whole_body["slots_used"] == len(mem["slots"])
    )
    return result
