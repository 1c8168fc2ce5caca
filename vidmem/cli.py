"""The ``vidmem`` command: serve, ask, worker, ingest."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from vidmem.settings import Settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    given = {k: getattr(args, k, None) for k in ("host", "port", "model", "budget", "redis_url", "fps")}
    return Settings(**{k: v for k, v in (given | extra).items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = _settings(args)
    mode = (
        "embedded (in-memory Redis, in-process workers)"
        if settings.embedded
        else f"distributed ({settings.redis_url})"
    )
    print(
        f"vidmem: serving on http://{settings.host}:{settings.port} in {mode} mode, model {settings.model}",
        file=sys.stderr,
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    fill = round(frac * width)
    return f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%"


def cmd_ask(args: argparse.Namespace) -> int:
    from stream.errors import SourceError
    from workers import service
    from workers.runtime import runtime_for

    settings = _settings(args, redis_url=None)  # one shot: always embedded
    rt = runtime_for(settings)
    local = Path(args.video).exists()
    src = str(Path(args.video).resolve()) if local else args.video
    try:
        info = service.check_video(rt, src, local=local)
    except SourceError as e:
        print(f"vidmem: {e.code}: {e}", file=sys.stderr)
        return 2
    mode = "keyframes" if args.keyframes else "fps"
    job_id, stream_id = service.submit_video(rt, src, local=local, info=info, fps=args.fps, mode=mode)
    quiet = args.json or not sys.stderr.isatty()
    while True:
        job = service.job_view(rt, job_id)
        if not quiet:
            print(f"\rencoding {_bar(int(job['progress'] * 1000), 1000)} {job['frames_encoded']}/"
                  f"{job['frames_sampled']} frames", end="", file=sys.stderr)  # fmt: skip
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    if not quiet:
        print(file=sys.stderr)
    if job["state"] == "failed":
        print(f"vidmem: the video could not be ingested: {job['error']}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {}
    for ev in service.ask(rt, stream_id, args.question, args.max_new_tokens):
        if ev.kind == "piece" and not args.json:
            print(ev.data["text"], end="", flush=True)
        elif ev.kind == "restart" and not args.json:
            print("\n[the answer restarted]", flush=True)
        elif ev.kind == "done":
            result = ev.data
        elif ev.kind == "error":
            print(f"vidmem: {ev.data['code']}: {ev.data['message']}", file=sys.stderr)
            return 2
    keys = ("answer", "tokens_used", "budget", "slots_used", "latency_s", "ttft_s", "prompt_tokens")
    out = {k: result[k] for k in keys} | {"frames": job["frames_encoded"]}
    if args.json:
        print(json.dumps(out))
    else:
        print()
        print(f"tokens_used={out['tokens_used']} budget={out['budget']} slots_used={out['slots_used']} "
              f"frames={out['frames']} prompt_tokens={out['prompt_tokens']} "
              f"ttft_s={out['ttft_s']:.3f} latency_s={out['latency_s']:.3f}")  # fmt: skip
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.celery_app import make_celery
    from workers.dispatch import QUEUES

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    bad = [q for q in queues if q not in QUEUES]
    if bad or not queues:
        print(f"vidmem: unknown queues {bad}; choose from {','.join(QUEUES)}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings.redis_url is None:
        print("vidmem: a worker needs --redis-url or VIDMEM_REDIS_URL", file=sys.stderr)
        return 2
    # Worker child processes read these (get_settings / worker_process_init).
    os.environ["VIDMEM_REDIS_URL"] = settings.redis_url
    os.environ["VIDMEM_MODEL"] = settings.model
    os.environ["VIDMEM_WORKER_QUEUES"] = ",".join(queues)
    app = make_celery(settings)
    argv = ["worker", "-Q", ",".join(queues), "--pool", args.pool, "--concurrency", str(args.concurrency),
            "--loglevel", args.loglevel, "--without-gossip", "--without-mingle", "-n", args.name]  # fmt: skip
    app.worker_main(argv)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import signal
    import threading

    from workers.live import LiveSupervisor
    from workers.runtime import runtime_for

    settings = _settings(args)
    if settings.redis_url is None:
        print("vidmem: an ingest process needs --redis-url or VIDMEM_REDIS_URL", file=sys.stderr)
        return 2
    sup = LiveSupervisor(runtime_for(settings), name=args.name)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"vidmem: ingest process {sup.owner} reading live streams from {settings.redis_url}",
          file=sys.stderr)  # fmt: skip
    sup.start()
    while not stop.wait(0.5):
        if not sup.alive:
            print("vidmem: the live supervisor died; exiting", file=sys.stderr)
            return 1
    sup.stop()  # gives every lease back, so another ingest process takes the streams over at once
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidmem", description="Ask questions about everything a video stream showed."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP API (embedded mode unless --redis-url)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--model", help="hub id, local checkpoint, or a preset (tiny, random-0.5b)")
    s.add_argument("--budget", type=int)
    s.add_argument("--redis-url", dest="redis_url")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("ask", help="one shot: ingest a video in-process and answer a question")
    a.add_argument("video", help="a local file or an http(s) URL")
    a.add_argument("question")
    a.add_argument("--model")
    a.add_argument("--budget", type=int)
    a.add_argument("--fps", type=float)
    a.add_argument("--keyframes", action="store_true", help="sample keyframes only (fast path)")
    a.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_ask)

    w = sub.add_parser("worker", help="run a Celery worker")
    w.add_argument("--queues", default="ingest,encode,answer")
    w.add_argument("--redis-url", dest="redis_url")
    w.add_argument("--model")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--name", default="vidmem@%h")
    w.set_defaults(func=cmd_worker)

    i = sub.add_parser("ingest", help="run a live-stream reader process (RTSP, HTTP MJPEG, HLS)")
    i.add_argument("--redis-url", dest="redis_url")
    i.add_argument("--name", help="this process's name in stream views (default host:pid:random)")
    i.set_defaults(func=cmd_ingest)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
