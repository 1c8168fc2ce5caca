"""Hostile and helper RTSP peers for the pinning tests, as threads of the test on loopback addresses.

``RedirectingRtsp``: an RTSP server that answers OPTIONS (or, with ``on="DESCRIBE"``, DESCRIBE after a 200
to OPTIONS) with a redirect to ``target`` (its status zero-padded or without a Location, if asked),
plain or over TLS (``certificate``), and records every request line. ``ElsewhereRtsp``: answers a whole
session (OPTIONS, DESCRIBE with an SDP, SETUP, PLAY) but names another server in its ``Content-Base``.
``TlsFront``: a TLS-terminating front of a plain TCP server (an rtsps camera made of the real GStreamer
one). ``self_signed(dir)``: a certificate and key made by the openssl CLI. ``Listener``: the TCP (or TLS)
listener they are made of, for other hostile peers.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for "camera.test" and its key, written by the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=camera.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


class Listener:
    """A TCP listener on ``address`` served by ``handle(conn)`` in a thread per connection."""

    def __init__(self, address: str, certificate: tuple[Path, Path] | None = None) -> None:
        self.sock = socket.create_server((address, 0))
        self.address, self.port = address, int(self.sock.getsockname()[1])
        self._tls = _server_context(certificate) if certificate else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


def _requests(conn: socket.socket, seen: list[str]) -> Iterator[tuple[str, str]]:
    """Each RTSP request on ``conn`` (its head only) as (request line, ``CSeq`` header line; ``CSeq: 1``
    when it has none), until the client hangs up; every request line is appended to ``seen``."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        seen.append(lines[0])
        yield lines[0], next((line for line in lines if line.lower().startswith("cseq:")), "CSeq: 1")


class RedirectingRtsp(Listener):
    """Redirects (``status``, ``Location: target``) the first OPTIONS, or with ``on="DESCRIBE"`` the first
    DESCRIBE after answering OPTIONS with 200; ``requests`` lists every request line it got. ``padding``:
    zeros written before the status digits (``RTSP/1.0 000…0302``); ``location``: False sends none."""

    def __init__(
        self,
        address: str,
        target: str,
        status: int = 302,
        on: str = "OPTIONS",
        certificate: tuple[Path, Path] | None = None,
        padding: int = 0,
        location: bool = True,
    ) -> None:
        super().__init__(address, certificate)
        self.target, self.status, self.on = target, status, on
        self.padding, self.location = padding, location
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        scheme = "rtsps" if self._tls else "rtsp"
        return f"{scheme}://{self.address}:{self.port}/camera"

    def handle(self, conn: socket.socket) -> None:
        for request, cseq in _requests(conn, self.requests):
            if request.startswith(self.on):
                where = f"Location: {self.target}\r\n" if self.location else ""
                moved = f"RTSP/1.0 {'0' * self.padding}{self.status} Moved\r\n{cseq}\r\n{where}\r\n"
                conn.sendall(moved.encode())
                return
            conn.sendall(f"RTSP/1.0 200 OK\r\n{cseq}\r\nPublic: OPTIONS, DESCRIBE, PLAY\r\n\r\n".encode())


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=camera\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n"
)


class ElsewhereRtsp(Listener):
    """Answers every request with 200 (DESCRIBE with ``SDP`` and ``Content-Base: base``, SETUP with TCP
    interleaved transport) and sends no media; ``requests`` lists the request lines, ``connections``
    counts the connections."""

    def __init__(self, address: str, base: str) -> None:
        super().__init__(address)
        self.base = base
        self.requests: list[str] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"rtsp://{self.address}:{self.port}/camera"

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1
        for request, cseq in _requests(conn, self.requests):
            headers, body = "Session: 42\r\n", ""
            if request.startswith("DESCRIBE"):
                headers = f"Content-Base: {self.base}\r\nContent-Type: application/sdp\r\n"
                headers, body = headers + f"Content-Length: {len(SDP)}\r\n", SDP
            elif request.startswith("SETUP"):
                headers += "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            conn.sendall(f"RTSP/1.0 200 OK\r\n{cseq}\r\n{headers}\r\n{body}".encode())


class TlsFront(Listener):
    """Terminates TLS on ``address`` and relays each connection to the plain TCP server ``backend``."""

    def __init__(self, address: str, backend: tuple[str, int], certificate: tuple[Path, Path]) -> None:
        super().__init__(address, certificate)
        self.backend = backend

    def handle(self, conn: socket.socket) -> None:
        with socket.create_connection(self.backend, timeout=10) as back:
            conn.settimeout(None)
            back.settimeout(None)
            other = threading.Thread(target=_copy, args=(back, conn), daemon=True)
            other.start()
            _copy(conn, back)
            with contextlib.suppress(OSError):
                back.shutdown(socket.SHUT_RDWR)
            other.join(5)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
