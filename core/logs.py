"""Structured logs: one JSON object per line, carrying the ids of the work a line was logged for.

``log_context(stream_id=..., job_id=..., tenant=...)`` sets ids for the code it wraps (a context manager,
or a decorator); ``log_args("job_id", ...)`` takes them from a function's arguments, which is how task
functions get them: context variables do not follow work handed to a ``ThreadPoolExecutor`` (embedded
mode) or to another process (Celery), so each task sets its own from the ids it is given.
``configure_logging`` installs the one root handler, once per process (``vidmem serve|worker|ingest``).

A JSON line holds ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the context's ids, the
fields given as ``extra=`` (e.g. the access log's ``method``, ``path``, ``status``, ``duration_ms``), and
``exc_info`` as text when there is a traceback.

Knows nothing about HTTP, Redis or Celery.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("vidmem_log_context", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "log_context"}


def current_context() -> dict[str, str]:
    """The ids set for the code running now (a copy)."""
    return dict(_CONTEXT.get() or {})


def _clean(ids: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in ids.items() if v is not None and v != ""}


@contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Log lines emitted inside carry ``ids`` (added to the enclosing ones; None and "" are left out).
    Also a decorator: ``@log_context(component="live")``."""
    token = _CONTEXT.set((_CONTEXT.get() or {}) | _clean(ids))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**ids: object) -> None:
    """Add ids learnt along the way (a job's stream) to the innermost ``log_context``, until it ends.
    Outside any ``log_context`` this does nothing (an id set for good would leak into unrelated work)."""
    ctx = _CONTEXT.get()
    if ctx is not None:
        ctx.update(_clean(ids))


def log_args(*names: str, **renamed: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function in a ``log_context`` of its arguments: ``@log_args("job_id", "stream_id")``
    logs its ``job_id`` and ``stream_id`` parameters under those names, ``answer_id="request_id"`` the
    ``request_id`` parameter as ``answer_id``."""
    fields = {n: n for n in names} | renamed  # log field -> parameter

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(fn)
        missing = set(fields.values()) - set(sig.parameters)
        if missing:
            raise TypeError(f"{fn.__qualname__} has no parameters {sorted(missing)}")

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            given = sig.bind_partial(*args, **kwargs).arguments
            with log_context(**{f: given.get(p) for f, p in fields.items()}):
                return fn(*args, **kwargs)

        return run

    return decorate


def in_log_context(fn: Callable[[], R], **ids: object) -> Callable[[], R]:
    """``fn`` run in a ``log_context(**ids)``: a thread's target that logs with these ids."""

    @functools.wraps(fn)
    def run() -> R:
        with log_context(**ids):
            return fn()

    return run


class ContextFilter(logging.Filter):
    """Stamps each record with the ids of the thread (or task) that logged it, before any formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "log_context"):
            record.log_context = current_context()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the context's ids, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = getattr(record, "log_context", None)
        out |= ctx if ctx is not None else current_context()
        out |= _extras(record)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the context's ids and extras appended as ``[key=value ...]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = getattr(record, "log_context", None)
        fields = (ctx if ctx is not None else current_context()) | _extras(record)
        if not fields:
            return line
        head, nl, rest = line.partition("\n")  # after the message, before a traceback
        return f"{head} [{' '.join(f'{k}={v}' for k, v in fields.items())}]{nl}{rest}"


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(
    log_format: str = "json", log_level: str | int = "INFO", stream: IO[str] | None = None
) -> None:
    """Replace the root logger's handlers with one writing ``log_format`` ("json" or "text") lines to
    ``stream`` (stderr). Loggers of libraries (uvicorn, Celery) propagate to it."""
    if log_format not in ("json", "text"):
        raise ValueError(f"log_format must be 'json' or 'text', not {log_format!r}")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(make_handler(log_format, stream))
    root.setLevel(log_level)
    logging.captureWarnings(True)
