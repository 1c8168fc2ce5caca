"""The ``vidmem`` command: serve, ask, worker, ingest, keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream.urls import redact
from vidmem.logs import configure_logging
from vidmem.settings import Settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    given = {k: getattr(args, k, None) for k in ("host", "port", "model", "budget", "redis_url", "fps")}
    return Settings(**{k: v for k, v in (given | extra).items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    mode = (
        "embedded (in-memory Redis, in-process workers)"
        if settings.embedded
        else f"distributed ({redact(settings.redis_url or '')})"
    )
    print(
        f"vidmem: serving on http://{settings.host}:{settings.port} in {mode} mode, model {settings.model}",
        file=sys.stderr,
    )
    # uvicorn logs through the root handler (log_config=None); the API's own middleware writes access lines
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), log_config=None, access_log=False)  # fmt: skip
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    fill = round(frac * width)
    return f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%"


def cmd_ask(args: argparse.Namespace) -> int:
    from stream.errors import SourceError
    from workers import service
    from workers.runtime import runtime_for
    from workers.tenants import LOCAL_TENANT

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
    job_id, stream_id = service.submit_video(rt, LOCAL_TENANT, src, local=local, info=info, fps=args.fps,
                                             mode=mode)  # fmt: skip
    quiet = args.json or not sys.stderr.isatty()
    while True:
        job = service.job_view(rt, LOCAL_TENANT, job_id)
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
    for ev in service.ask(rt, LOCAL_TENANT, stream_id, args.question, args.max_new_tokens):
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
    configure_logging(settings.log_format, args.loglevel or settings.log_level)
    # Worker child processes read these (get_settings / worker_process_init).
    os.environ["VIDMEM_REDIS_URL"] = settings.redis_url
    os.environ["VIDMEM_MODEL"] = settings.model
    os.environ["VIDMEM_WORKER_QUEUES"] = ",".join(queues)
    app = make_celery(settings)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner among the JSON lines
    argv = [*quiet, "worker", "-Q", ",".join(queues), "--pool", args.pool, "--concurrency",
            str(args.concurrency), "--loglevel", args.loglevel or settings.log_level, "--without-gossip",
            "--without-mingle", "-n", args.name or f"{'-'.join(queues)}@%h"]  # fmt: skip
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
    configure_logging(settings.log_format, settings.log_level)
    sup = LiveSupervisor(runtime_for(settings), name=args.name)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"vidmem: ingest process {sup.owner} reading live streams from {redact(settings.redis_url or '')}",
          file=sys.stderr)  # fmt: skip
    sup.start()
    while not stop.wait(0.5):
        if not sup.alive:
            print("vidmem: the live supervisor died; exiting", file=sys.stderr)
            return 1
    sup.stop()  # gives every lease back, so another ingest process takes the streams over at once
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import redis

    from workers.tenants import ApiKeys

    settings = _settings(args)
    if settings.redis_url is None:
        print("vidmem: API keys live in Redis: give --redis-url or VIDMEM_REDIS_URL (the embedded mode "
              "needs no keys)", file=sys.stderr)  # fmt: skip
        return 2
    keys = ApiKeys(redis.Redis.from_url(settings.redis_url))
    if args.action == "create":
        try:
            rec, key = keys.create(args.tenant, args.name or "")
        except ValueError as e:
            print(f"vidmem: {e}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"key": key, "key_id": rec.key_id, "tenant": rec.tenant, "name": rec.name}))
        else:
            print(key)
            print(f"key {rec.key_id} for tenant {rec.tenant!r}: shown once, store it now", file=sys.stderr)
    elif args.action == "list":
        rows = [{"key_id": k.key_id, "tenant": k.tenant, "name": k.name,
                 "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created_at))}
                for k in keys.list()]  # fmt: skip
        if args.json:
            print(json.dumps(rows))
        for r in [] if args.json else rows:
            print(f"{r['key_id']}  {r['tenant']:<24} {r['created_at']}  {r['name']}")
    elif not keys.revoke(args.key_id):
        print(f"vidmem: no key {args.key_id!r}", file=sys.stderr)
        return 1
    else:
        print(f"revoked {args.key_id}", file=sys.stderr)
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
    w.add_argument("--loglevel", help="default: VIDMEM_LOG_LEVEL (INFO)")
    w.add_argument(
        "--name",
        help="Celery node name (default <queues>@%%h, e.g. encode@host: distinct per worker kind on a host; "
        "two workers of one kind on one host need names of their own)",
    )
    w.set_defaults(func=cmd_worker)

    i = sub.add_parser("ingest", help="run a live-stream reader process (RTSP, HTTP MJPEG, HLS)")
    i.add_argument("--redis-url", dest="redis_url")
    i.add_argument("--name", help="this process's name in stream views (default host:pid:random)")
    i.set_defaults(func=cmd_ingest)

    k = sub.add_parser("keys", help="API keys of tenants (distributed mode): create, list, revoke")
    k.add_argument("--redis-url", dest="redis_url")
    ks = k.add_subparsers(dest="action", required=True)
    kc = ks.add_parser("create", help="a new key for a tenant; prints the key once")
    kc.add_argument("--tenant", required=True, help="who the key acts for: 1-63 of a-z 0-9 _ . -")
    kc.add_argument("--name", help="a label, e.g. who holds the key")
    kc.add_argument("--json", action="store_true")
    kl = ks.add_parser("list", help="every key: id, tenant, created, label (never the key)")
    kl.add_argument("--json", action="store_true")
    kr = ks.add_parser("revoke", help="revoke a key by its id; requests with it fail at once")
    kr.add_argument("key_id")
    k.set_defaults(func=cmd_keys)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as e:  # settings from flags or VIDMEM_* variables: say which, no traceback
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "settings"
            print(f"vidmem: {where}: {err['msg']}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
