"""Loopback peers for the stream tests: a small HTTP file server in a thread."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a directory, plus three misbehaving paths:

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


@dataclass(frozen=True)
class HttpServer:
    """A running loopback HTTP server; ``url(name)`` is the URL of a file in ``root``."""

    root: Path
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@contextmanager
def serve_directory(root: Path) -> Iterator[HttpServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) from a thread; stop and close it on exit."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-http", daemon=True)
    thread.start()
    try:
        yield HttpServer(root=root, base=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
