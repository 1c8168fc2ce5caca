"""The ``vidmem`` command: serve, ask, worker, ingest, keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from core.logs import configure_logging
from core.settings import Settings
from model.names import PRESET_NAMES
from stream.urls import redact
from vidmem.console import Progress, ingest_progress, printable, say

if TYPE_CHECKING:
    from workers.runtime import Runtime

SETTING_FLAGS = ("host", "port", "model", "budget", "redis_url", "fps", "max_new_tokens")
"""Options that set the Settings field of the same name (None: the field's VIDMEM_* variable or default)."""


def _settings(args: argparse.Namespace, **fixed: Any) -> Settings:
    given = {k: v for k in SETTING_FLAGS if k not in fixed and (v := getattr(args, k, None)) is not None}
    return Settings(**given, **fixed)


def _model_ok(settings: Settings) -> bool:
    """Whether the model can be loaded here without a download; if not, say so in one line."""
    from model.families import model_problem

    problem = model_problem(settings.model, settings.text_tokens)
    if problem is not None:
        say(problem)
    return problem is None


def _redis_url(settings: Settings, who: str) -> str | None:
    """The Redis URL of the distributed mode, which ``who`` needs; None (and said) when none is set."""
    if settings.redis_url is None:
        say(f"{who} needs --redis-url or VIDMEM_REDIS_URL")
    return settings.redis_url


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.embedded and not _model_ok(settings):  # distributed mode: the model workers load it
        return 2
    import uvicorn

    from api.main import create_app

    configure_logging(settings.log_format, settings.log_level)
    mode = (
        "embedded (in-memory Redis, in-process workers)"
        if settings.embedded
        else f"distributed ({settings.redis_url})"
    )
    say(f"serving on http://{settings.host}:{settings.port} in {mode} mode, model {settings.model}")
    # uvicorn logs through the root handler (log_config=None); the API's own middleware writes access lines
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), log_config=None, access_log=False)  # fmt: skip
    return 0


def _ask_source(args: argparse.Namespace, settings: Settings) -> tuple[str, bool] | None:
    """The video ``vidmem ask`` reads, and whether it is a local file; None (said why) if there is none.

    An existing path is a local file, whatever its name. Anything else must be a URL with an allowed
    scheme (no ``file:``, ``concat:``... tricks); text that is no URL is a file that does not exist."""
    from stream.errors import ForbiddenUrl
    from stream.urls import classify

    if args.demo:
        from stream.demo import demo_path, demo_video

        if not demo_path(settings.model_cache).is_file():
            say(f"making the demo video (once) in {settings.model_cache}")
        return str(demo_video(settings.model_cache)), True
    path = Path(args.video)
    if path.exists():
        if not path.is_file():
            say(f"{args.video} is not a file")
            return None
        return str(path.resolve()), True
    try:
        _, scheme = classify(args.video, settings.allowed_schemes, allow_local=True)
    except ForbiddenUrl as e:
        say(f"{e.code}: {e}")
        return None
    if scheme is None:
        say(f"no such file: {args.video}")
        return None
    return args.video, False


def cmd_ask(args: argparse.Namespace) -> int:
    from stream.errors import SourceError
    from workers import service
    from workers.dispatch import runtime_for
    from workers.tenants import LOCAL_TENANT

    if args.redis_url is not None:
        say("ask runs in this process (embedded mode): it takes no --redis-url")
        return 2
    if args.demo == (args.video is not None):
        say("give a video (a file or an http(s) URL) and a question, or --demo and a question")
        return 2
    settings = _settings(args, redis_url=None)  # one shot: always embedded
    source = _ask_source(args, settings)
    if source is None or not _model_ok(settings):
        return 2
    src, local = source
    rt = runtime_for(settings, trusted_urls=True)  # the user's own file or URL, on the user's machine
    try:
        info = service.check_video(rt, src, local=local)
    except SourceError as e:
        say(f"{e.code}: {e}")
        return 2
    progress = Progress(sys.stderr, quiet=args.json)
    progress.update(f"loading model {settings.model}...")
    t0 = time.monotonic()
    rt.backend()  # now, visibly, rather than behind the first frames' encode
    progress.end(f"loading model {settings.model}: ready in {time.monotonic() - t0:.1f} s")
    mode = "keyframes" if args.keyframes else "fps"
    job_id, stream_id = service.submit_video(rt, LOCAL_TENANT, src, local=local, info=info,
                                             fps=settings.fps, mode=mode)  # fmt: skip
    while True:
        job = rt.records.job(job_id)
        encoded = rt.memory.next_seq(stream_id)
        progress.update(ingest_progress(job.expected_frames, job.frames_sampled, job.sampling_done, encoded))
        if job.state in ("done", "failed"):
            break
        time.sleep(0.2)
    progress.end()
    if job.state == "failed":
        say(f"the video could not be ingested: {job.error}")
        return 2
    return _answer(args, rt, stream_id, settings.max_new_tokens, encoded, progress)


def _answer(args: argparse.Namespace, rt: Runtime, stream_id: str, max_new_tokens: int, frames: int,
            progress: Progress) -> int:  # fmt: skip
    """Ask, streaming the answer's text to stdout (control characters escaped), then its accounting."""
    from workers import service
    from workers.tenants import LOCAL_TENANT

    progress.end(f"answering over {frames} frames...")
    result: dict[str, Any] = {}
    for ev in service.ask(rt, LOCAL_TENANT, stream_id, args.question, max_new_tokens):
        if ev.kind == "piece" and not args.json:
            print(printable(ev.data["text"]), end="", flush=True)
        elif ev.kind == "restart" and not args.json:
            print("\n[the answer restarted]", flush=True)
        elif ev.kind == "done":
            result = ev.data
        elif ev.kind == "error":
            say(f"{ev.data['code']}: {ev.data['message']}")
            return 2
    keys = ("answer", "tokens_used", "budget", "slots_used", "latency_s", "ttft_s", "prompt_tokens")
    out = {k: result[k] for k in keys} | {"frames": frames}
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
    from workers.queues import QUEUES

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    bad = [q for q in queues if q not in QUEUES]
    if bad or not queues:
        say(f"unknown queues {bad}; choose from {','.join(QUEUES)}")
        return 2
    settings = _settings(args)
    url = _redis_url(settings, "a worker")
    if url is None:
        return 2
    if {"encode", "answer"} & set(queues) and not _model_ok(settings):  # the queues that load the model
        return 2
    configure_logging(settings.log_format, args.loglevel or settings.log_level)
    # Worker child processes read these as their Settings (get_settings, in worker_process_init).
    os.environ["VIDMEM_REDIS_URL"] = url
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

    from workers.dispatch import runtime_for
    from workers.live import LiveSupervisor

    settings = _settings(args)
    if _redis_url(settings, "an ingest process") is None:
        return 2
    configure_logging(settings.log_format, settings.log_level)
    sup = LiveSupervisor(runtime_for(settings), name=args.name)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    say(f"ingest process {sup.owner} reading live streams from {settings.redis_url}")
    sup.start()
    while not stop.wait(0.5):
        if not sup.alive:
            say("the live supervisor died; exiting")
            return 1
    sup.stop()  # gives every lease back, so another ingest process takes the streams over at once
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import redis

    from workers.tenants import ApiKeys

    settings = _settings(args)
    url = _redis_url(settings, "API keys (kept in Redis; the embedded mode needs none)")
    if url is None:
        return 2
    keys = ApiKeys(redis.Redis.from_url(url))
    if args.action == "create":
        try:
            rec, key = keys.create(args.tenant, args.name or "")
        except ValueError as e:
            say(str(e))
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
            print(printable(f"{r['key_id']}  {r['tenant']:<24} {r['created_at']}  {r['name']}"))
    elif not keys.revoke(args.key_id):
        say(f"no key {args.key_id!r}")
        return 1
    else:
        print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


class Parser(argparse.ArgumentParser):
    """argparse whose errors never show a credential: an option it refuses may carry a Redis URL."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {printable(redact(message))}\n")


def _help(field: str, what: str | None = None) -> str:
    """An option's help: the Settings field's description (or ``what``), its default and its variable."""
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "default_text" in extra:
        shown = str(extra["default_text"])
    elif default is None:
        shown = "none"
    elif isinstance(default, tuple | list):
        shown = ",".join(map(str, default)) or "none"
    else:
        shown = str(default)
    text = f"{what or info.description} Default: {shown} (VIDMEM_{field.upper()})."
    return text.replace("%", "%%")


def _global_options(p: argparse.ArgumentParser, default: Any) -> None:
    """Options every command takes, before or after its name (``vidmem --redis-url X serve`` and
    ``vidmem serve --redis-url X``): the subcommands' copies default to SUPPRESS, so that they only set a
    value when given, and never hide one given before the name."""
    p.add_argument("--redis-url", dest="redis_url", metavar="URL", default=default, help=_help("redis_url"))
    presets = ", ".join(PRESET_NAMES)
    what = f"{Settings.model_fields['model'].description} Presets (no download): {presets}."
    p.add_argument("--model", metavar="NAME", default=default, help=_help("model", what))


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand (or a subcommand's action: ``keys list``) that also takes the global options."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    _global_options(p, argparse.SUPPRESS)
    return p


def _version() -> str:
    """The installed package's version; "unknown" when run from a checkout that is not installed."""
    try:
        return version("vidmem")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="vidmem", description="Ask questions about everything a video stream showed.")
    p.add_argument("--version", action="version", version=f"vidmem {_version()}")
    _global_options(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _command(sub, "serve", "run the HTTP API and the web page (embedded mode unless --redis-url)")
    s.add_argument("--host", help=_help("host"))
    s.add_argument("--port", type=int, help=_help("port"))
    s.add_argument("--budget", type=int, help=_help("budget"))
    s.set_defaults(func=cmd_serve)

    _ask_parser(sub)

    w = _command(sub, "worker", "run a Celery worker (distributed mode)")
    w.add_argument("--queues", default="ingest,encode,answer",
                   help="Comma-separated queues to consume. Default: %(default)s.")  # fmt: skip
    w.add_argument("--concurrency", type=int, default=1, help="Worker processes. Default: %(default)s.")
    w.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="Celery's execution pool. Default: %(default)s.")  # fmt: skip
    w.add_argument("--loglevel", help=_help("log_level"))
    w.add_argument(
        "--name",
        help="Celery node name, distinct per worker kind on a host; two workers of one kind on one host need "
        "names of their own. Default: <queues>@%%h, e.g. encode@host.",
    )
    w.set_defaults(func=cmd_worker)

    i = _command(sub, "ingest", "run a live-stream reader process (RTSP, HTTP MJPEG, HLS; distributed mode)")
    i.add_argument("--name", help="This process's name in stream views. Default: host:pid:random.")
    i.set_defaults(func=cmd_ingest)

    _keys_parser(sub)
    return p


def _ask_parser(sub: Any) -> None:
    """``vidmem ask``: its arguments and options."""
    a = _command(sub, "ask", "one shot: ingest a video in this process and answer a question about it")
    a.add_argument("video", nargs="?", help="A local video file or an http(s) URL (none with --demo).")
    a.add_argument("question", help="What to ask about the video.")
    a.add_argument("--demo", action="store_true",
                   help="Ask about a 30 s sample video (scenes, captions), made once with PyAV.")  # fmt: skip
    a.add_argument("--budget", type=int, help=_help("budget"))
    a.add_argument("--fps", type=float, help=_help("fps", "Frames sampled per second of video."))
    a.add_argument("--keyframes", action="store_true",
                   help="Sample the keyframes only, not --fps frames per second (faster).")  # fmt: skip
    a.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help=_help("max_new_tokens"))
    a.add_argument("--json", action="store_true",
                   help="Print one JSON object (answer and token accounting), no progress.")  # fmt: skip
    a.set_defaults(func=cmd_ask)


def _keys_parser(sub: Any) -> None:
    """``vidmem keys`` and its actions (create, list, revoke)."""
    k = _command(sub, "keys", "API keys of tenants (distributed mode): create, list, revoke")
    ks = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    kc = _command(ks, "create", "a new key for a tenant; prints the key once")
    kc.add_argument("--tenant", required=True, help="Who the key acts for: 1-63 of a-z 0-9 _ . -")
    kc.add_argument("--name", help="A label, e.g. who holds the key. Default: none.")
    kc.add_argument("--json", action="store_true", help="Print one JSON object.")
    kl = _command(ks, "list", "every key: id, tenant, created, label (never the key)")
    kl.add_argument("--json", action="store_true", help="Print one JSON array.")
    kr = _command(ks, "revoke", "revoke a key by its id; requests with it fail at once")
    kr.add_argument("key_id", help="The key's id, as `vidmem keys list` shows it.")
    k.set_defaults(func=cmd_keys)


def main(argv: list[str] | None = None) -> int:
    for out in (sys.stdout, sys.stderr):  # text that the terminal cannot encode is escaped, never an error
        if hasattr(out, "reconfigure"):
            out.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as e:  # settings from flags or VIDMEM_* variables: say which, no traceback
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "settings"
            say(f"{where}: {err['msg']}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
