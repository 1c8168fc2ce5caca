"""Helpers of the perimeter tests: an embedded ``vidmem serve`` as a child process, raw HTTP/1.1 over a
socket (any ``Host``, chunked bodies of any size, stopping the upload as soon as the server answers),
and the resident memory of a process."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.procs import Proc, embedded_env, run_api


@dataclass(frozen=True)
class Embedded:
    base: str
    proc: Proc
    upload_dir: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


@contextmanager
def embedded_server(logdir: Path, model_cache: Path, **settings: object) -> Iterator[Embedded]:
    """``vidmem serve`` in embedded mode (tiny model) on a free port, ``settings`` as ``VIDMEM_<NAME>``."""
    defaults: dict[str, object] = {"budget": 512, "frame_size": 64, "log_format": "text"}
    env = embedded_env(model_cache, logdir / "uploads", **(defaults | settings))
    with run_api(env, logdir) as (base, proc):
        yield Embedded(base, proc, logdir / "uploads")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int
    """Body bytes the client had sent when the answer came (or all of them)."""
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Iterable[bytes] = (),
    chunked: bool = False,
    timeout_s: float = 30,
    version: str = "1.1",
) -> RawResponse:
    """Send one HTTP/``version`` request to 127.0.0.1:``port`` exactly as given (``headers`` name ``Host`` and
    ``Content-Length`` themselves, if any), its body piece by piece (``chunked``: as chunks), and stop
    sending as soon as the server answers or closes. Returns the answer."""
    start = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        head = f"{method} {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        s.sendall((head + "\r\n").encode("latin-1"))
        try:
            for piece in body:
                if select.select([s], [], [], 0)[0]:
                    break  # the server answered (or closed): stop uploading
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            else:
                if chunked:
                    s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: read what it said
        status, resp_headers, resp_body = _read_response(s)
    return RawResponse(status, resp_headers, resp_body, sent, round(time.monotonic() - start, 3))


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        if not got:
            raise AssertionError(f"the server closed the connection without an answer: {data!r}")
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        got = s.recv(65536)
        if not got:
            break
        rest += got
    return status, headers, rest[:length]


def pieces(total: int, size: int = 1 << 20, first: bytes = b"") -> Iterator[bytes]:
    """``first``, then zeros (as ``b"a"``) up to ``total`` bytes in all, ``size`` at a time."""
    if first:
        yield first
    left = total - len(first)
    block = b"a" * size
    while left > 0:
        yield block[: min(size, left)]
        left -= size


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
