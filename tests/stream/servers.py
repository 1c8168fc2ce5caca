"""Loopback peers for the stream tests: a small HTTP file server in a thread, which serves byte ranges, and
``in_thread`` to run any other HTTP server of a test the same way."""

from __future__ import annotations

import functools
import http.server
import io
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class RangeFiles(http.server.SimpleHTTPRequestHandler):
    """Files of a directory, announcing ``Accept-Ranges: bytes`` (unless ``announce_ranges`` is False) and
    answering ``Range: bytes=A-[B]`` with 206 and that part of the file (what a seekable MP4 over HTTP
    needs)."""

    announce_ranges = True

    def send_head(self) -> io.BufferedIOBase | None:  # type: ignore[override]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().send_head()  # type: ignore[return-value]
        data = path.read_bytes()
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, len(data) - 1
        if asked:
            start, end = int(asked[1]), min(int(asked[2] or end), end)
            if start > end:
                self.send_error(416)
                return None
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(end + 1 - start))
        if self.announce_ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data[start : end + 1])


class _Handler(RangeFiles):
    """Serves files from a directory (with byte ranges, see RangeFiles), plus three misbehaving paths:

    ``/cut/NAME``: announces NAME's full length, sends 60% of it and hangs up (a dropped connection);
    ``/stall/NAME``: announces NAME's full length (an MP4 with its index first), sends everything before
    the coded frames (up to the ``mdat`` payload) and then nothing until the client hangs up;
    ``/redirect-file``: redirects to ``file:///etc/passwd``.
    """

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/redirect-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path.startswith("/cut/"):
            data = (Path(self.directory) / self.path.removeprefix("/cut/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: int(len(data) * 0.6)])
            self.close_connection = True
            return
        if self.path.startswith("/stall/"):
            data = (Path(self.directory) / self.path.removeprefix("/stall/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: data.index(b"mdat") + 4])
            self.wfile.flush()
            self.rfile.read(1)  # returns when the client closes the connection
            self.close_connection = True
            return
        super().do_GET()


class QuietServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server that does not print a client hanging up mid-answer (a reader that seeks
    drops the rest of the body it was sent)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HttpServer:
    """A running loopback HTTP server; ``url(name)`` is the URL of a file in ``root``."""

    root: Path
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@contextmanager
def in_thread(server: http.server.HTTPServer) -> Iterator[str]:
    """Serve ``server`` (bound to an IPv4 address) from a thread and yield its base URL; stop and close it
    on exit."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-http", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_directory(root: Path) -> Iterator[HttpServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) from a thread; stop and close it on exit."""
    with in_thread(QuietServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))) as base:
        yield HttpServer(root=root, base=base)
