"""HTTP peers of the guarded-http tests, as threads of the test on loopback addresses.

``web_peer``: files of a directory (byte ranges served, ``Accept-Ranges`` announced or not) and
``/cam.mjpg``, an endless multipart JPEG feed; it records every request, can demand a login (Basic, or
Digest with MD5 or SHA-256, checked here independently of ``stream.http_auth``) and can speak TLS with a
self-signed certificate. ``Trickler``: answers 200 and then sends one byte every ``every_s`` seconds, in
the body (after an MP4 ``ftyp`` box and a ``free`` box declared as 1 GB) or in the headers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.stream.rtsp_peers import Listener
from tests.stream.servers import QuietServer, RangeFiles, in_thread

USER, PASSWORD = "cam", "s3cr:t@x"
"""The login a peer with ``login`` set accepts (the password needs quoting in a URL: ``s3cr%3At%40x``)."""

URL_PASSWORD = "s3cr%3At%40x"

Login = str
"""What a peer demands: "" (nothing), "basic", "digest-md5" or "digest-sha256"."""


def jpeg_frames(n: int = 10) -> list[bytes]:
    """``n`` 160x96 JPEG frames of growing brightness."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = 160, 96, "yuvj420p", Fraction(1, 10)
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((96, 160, 3), 20 * i, np.uint8), format="rgb24")
        out += [bytes(p) for p in codec.encode(frame.reformat(format="yuvj420p"))]
    return out


@dataclass
class Web:
    """A running peer: ``base`` URL (http or https), requests ``seen`` as (path, Range header), the
    ``Authorization`` headers sent (None: none), and the 401s it answered."""

    base: str
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    refusals: int = 0

    def url(self, name: str, login: str = "") -> str:
        scheme, _, rest = self.base.partition("://")
        return f"{scheme}://{login + '@' if login else ''}{rest}/{name}"


class _PeerServer(QuietServer):
    peer: Web
    jpegs: list[bytes]
    login: Login
    nonce: str


class _Peer(RangeFiles):
    server: _PeerServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        peer = self.server.peer
        peer.seen.append((self.path, self.headers.get("Range")))
        peer.authorizations.append(self.headers.get("Authorization"))
        if not self._logged_in():
            peer.refusals += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", self._challenge())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/cam.mjpg":
            self._mjpeg()
        else:
            super().do_GET()

    def _challenge(self) -> str:
        login = self.server.login
        if login == "basic":
            return 'Basic realm="camera"'
        algorithm = {"digest-md5": "MD5", "digest-sha256": "SHA-256"}[login]
        nonce = self.server.nonce
        return f'Digest realm="camera", qop="auth", algorithm={algorithm}, nonce="{nonce}", opaque="0a"'

    def _logged_in(self) -> bool:
        login, given = self.server.login, self.headers.get("Authorization", "")
        if not login:
            return True
        if login == "basic":
            return given == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', given.removeprefix("Digest ")))
        h = {"digest-md5": hashlib.md5, "digest-sha256": hashlib.sha256}[login]

        def hx(text: str) -> str:
            return h(text.encode()).hexdigest()

        ha1, ha2 = hx(f"{USER}:camera:{PASSWORD}"), hx(f"GET:{fields.get('uri')}")
        expected = hx(f"{ha1}:{self.server.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        return (
            given.startswith("Digest ")
            and fields.get("username") == USER
            and fields.get("uri") == self.path
            and fields.get("nonce") == self.server.nonce
            and fields.get("opaque") == "0a"
            and fields.get("response") == expected
        )

    def _mjpeg(self) -> None:
        """An endless multipart JPEG body at about 10 frames per second (a minute at most)."""
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        jpegs = self.server.jpegs
        for i in range(600):
            jpeg = jpegs[i % len(jpegs)]
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            try:
                self.wfile.write(head + jpeg + b"\r\n")
            except OSError:
                return
            time.sleep(0.1)


@contextmanager
def web_peer(
    root: Path,
    address: str = "127.0.0.1",
    port: int = 0,
    *,
    jpegs: list[bytes] | None = None,
    login: Login = "",
    accept_ranges: bool = True,
    certificate: tuple[Path, Path] | None = None,
) -> Iterator[Web]:
    """Serve ``root`` and ``/cam.mjpg`` on ``address``:``port`` (0: a free one) from a thread: demanding
    ``login``, announcing ``Accept-Ranges`` only with ``accept_ranges`` (ranges are served either way),
    over TLS with ``certificate``."""
    handler = type("Handler", (_Peer,), {"announce_ranges": accept_ranges})
    server = _PeerServer((address, port), functools.partial(handler, directory=str(root)))
    server.jpegs, server.login, server.nonce = jpegs or jpeg_frames(), login, secrets.token_hex(8)
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    with in_thread(server) as base:
        server.peer = Web(base.replace("http:", "https:") if certificate else base)
        yield server.peer


FTYP = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 0x200, b"isom", b"mp41")
FREE_1GB = struct.pack(">I4s", 1 << 30, b"free")


def far_index(clip: Path, gap: int = 1 << 20) -> Path:
    """Put a ``free`` box of ``gap`` bytes before the index (moov) at the end of the MP4 ``clip``, in
    place: reading it over HTTP then needs range requests (to the index and back to the media), whatever
    a reader buffers. The media's offsets, before the gap, stay right."""
    data = clip.read_bytes()
    at = data.rindex(b"moov") - 4
    assert at > data.index(b"mdat"), "the index must come after the media"
    clip.write_bytes(data[:at] + struct.pack(">I4s", gap + 8, b"free") + bytes(gap) + data[at:])
    return clip


class Trickler(Listener):
    """Answers any request with 200 and then one byte every ``every_s`` seconds until the client hangs
    up (or ``for_s`` seconds pass): in the body, after ``FTYP`` and ``FREE_1GB`` (``where="body"``), in
    a header line that never ends (``where="headers"``), or (``where="media"``) in the coded frames of
    the MP4 ``media`` (index first), after everything up to them sent at once: its open is quick, its
    first frame never comes. ``connections`` counts the requests."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        where: str = "body",
        every_s: float = 0.5,
        for_s: float = 30.0,
        media: bytes = b"",
    ) -> None:
        super().__init__(address)
        self.where, self.every_s, self.for_s, self.media = where, every_s, for_s, media
        self.connections = 0

    def url(self, name: str = "clip.mp4") -> str:
        return f"http://{self.address}:{self.port}/{name}"

    def handle(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        self.connections += 1
        ok = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
        if self.where == "headers":
            head, body = ok + b"X-Slow: ", b"a" * (1 << 20)  # a header line that goes on and on
        elif self.where == "body":
            head = ok + f"Content-Length: {(1 << 30) + len(FTYP)}\r\n\r\n".encode() + FTYP + FREE_1GB
            body = b"\0" * (1 << 20)  # the start of the free box: all it will ever get
        else:
            at = self.media.index(b"mdat") + 4
            head = ok + f"Content-Length: {len(self.media)}\r\n\r\n".encode() + self.media[:at]
            body = self.media[at:]
        conn.sendall(head)
        at = 0
        end = time.monotonic() + self.for_s
        while at < len(body) and not self._stop.is_set() and time.monotonic() < end:
            time.sleep(self.every_s)
            conn.sendall(body[at : at + 1])
            at += 1
