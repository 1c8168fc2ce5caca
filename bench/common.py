"""Reusable pieces of the benchmarks: timing, machine facts, an owned redis-server, output.

Knows nothing about models or memories: every benchmark builds on these.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench.redis_server import RedisServer

T = TypeVar("T")


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the result."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


@dataclass
class Stopwatch:
    """Seconds accumulated per named phase: ``with sw("encode"): ...``."""

    totals: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


# ---- machine ---------------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, its bf16 capability (what dtype ``auto`` follows), RAM, Python/torch/PyAV
    versions and the accelerator (if any)."""
    import av
    import torch

    from model.runtime import describe_cpu

    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "cpu_capability": describe_cpu(),
        "ram_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "av": av.__version__,
    }


# ---- redis -----------------------------------------------------------------------------------


class OwnedRedis:
    """A redis-server subprocess on 127.0.0.1 started (and stopped by its PID) by the benchmark.

    Without a ``redis-server`` binary it falls back to fakeredis, which has no ``MEMORY USAGE``:
    ``real`` is then False and ``note`` says so.
    """

    def __init__(self) -> None:
        self.server: RedisServer | None = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.client: redis.Redis
        self.real = False
        self.note = ""

    def start(self) -> OwnedRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            import fakeredis

            self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
            self.note = "redis-server not found: fakeredis used, byte counts are payload bytes only"
            return self
        self.tmp = tempfile.TemporaryDirectory(prefix="vidmem-bench-redis-")
        self.server = RedisServer(Path(self.tmp.name)).start()
        self.client = redis.Redis.from_url(self.server.url)
        self.real = True
        version = self.client.info("server").get("redis_version")
        self.note = f"redis-server {version} on 127.0.0.1:{self.server.port} (--save '' --appendonly no)"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def __enter__(self) -> OwnedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def keys_bytes(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """(sum of ``MEMORY USAGE key SAMPLES 0`` over the keys matching ``pattern``, key count)."""
    total = n = 0
    for key in client.scan_iter(match=pattern, count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
        n += 1
    return total, n


# ---- output ----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [list(header)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    """With ``as_json`` only the JSON object; otherwise the readable text, then the JSON."""
    if not as_json:
        print(text)
        print()
    print(json.dumps(result, indent=None if as_json else 2, sort_keys=False))
