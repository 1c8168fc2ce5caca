"""HTTP(S) requests made in Python on FFmpeg's behalf (PyAV's ``io_open``), each checked by a NetworkPolicy.

FFmpeg's own http protocol resolves the host name itself (a second lookup, after ours, which a name with
a short TTL can answer differently) and its HLS demuxer opens every playlist reload, segment, key and
init section at whatever host the playlist names. PyAV can route every open of one container through a
Python callable (``av.open(..., io_open=...)``) that returns a file-like object; FFmpeg's own protocols
are then not used by that container at all. ``GuardedOpener`` is that callable, for every http(s) URL
of a client (an MP4 or MJPEG URL, an HLS playlist and its segments). For each URL FFmpeg asks for, it

- accepts only the scheme of the first URL (https stays https), checked like a client's URL
  (``stream.urls.classify``);
- resolves the host and checks every address (``check_network``), then connects to a checked address
  itself: there is no second lookup, so the name cannot be re-pointed between check and connection;
- sends one GET (with ``Range`` for byte-range segments), follows no redirect (ForbiddenUrl), turns HTTP
  errors into UnreachableSource, and verifies TLS certificates (FFmpeg's https does not by default);
- returns the response body, read as FFmpeg asks for it. A body whose server announced its length and
  ``Accept-Ranges: bytes`` is seekable (an MP4 with its index at the end): a seek is remembered, and the
  next read far from the current position asks for ``Range: bytes=<pos>-`` on a new connection to the
  *same* address (no lookup). Other bodies (MJPEG's endless one) are read forward only.

PyAV re-raises an exception from here at the ``av.open`` or read that caused it. FFmpeg's HLS demuxer skips
a segment it could not open and tries the next one, so after the first failure (a refusal, an HTTP error,
an unreachable host) every later open of the container gets an empty body without any request: the first
error surfaces once, at the next read, and nothing more is fetched. A live reader then reopens the feed.

Standard library only; knows nothing about PyAV beyond the ``io_open`` signature.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

from stream.errors import ForbiddenUrl, SourceError, UnreachableSource, why
from stream.urls import NetworkPolicy, check_network, classify, redact

AVIO_FLAG_WRITE = 2
"""FFmpeg's flag for an open for writing (``io_open``'s ``flags``): never granted."""

USER_AGENT = "vidmem"

SKIP_AHEAD = 256 * 1024
"""A read this many bytes or fewer past the current position reads on and drops the gap instead of
asking for a new range (no new connection)."""

SEEK_FAILED = -1
"""What ``seek`` returns to FFmpeg for a seek it cannot do (an error code, not an exception)."""

Response = tuple[http.client.HTTPConnection, http.client.HTTPResponse]


class _Body:
    """An HTTP response body, read the way FFmpeg reads (``read(n)``: at most n bytes, b"" at the end).

    With ``size`` (the resource's length) and ``reopen`` (a GET of the same URL at the same address from a
    byte offset), it is seekable: ``seek`` only moves the position, the next ``read`` far from where the
    current response stands asks for a new range (see the module doc)."""

    def __init__(
        self,
        response: Response,
        shown: str,
        size: int | None = None,
        reopen: Callable[[int], Response] | None = None,
    ) -> None:
        self._conn, self._resp = response
        self._shown, self._size, self._reopen = shown, size, reopen
        self._at = 0  # offset of the next byte of the current response
        self._want = 0  # offset FFmpeg reads next

    def seekable(self) -> bool:
        return self._size is not None and self._reopen is not None

    def tell(self) -> int:
        return self._want

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position (SEEK_SET, SEEK_CUR, SEEK_END); returns it, or SEEK_FAILED."""
        if self._size is None or whence not in (0, 1, 2):
            return SEEK_FAILED
        target = offset + (0, self._want, self._size)[whence]
        if target < 0:
            return SEEK_FAILED
        self._want = target
        return target

    def read(self, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            if self._want != self._at:
                self._move()
            if self._size is not None and self._at >= self._size:
                return b""
            data = self._resp.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise UnreachableSource(f"reading {self._shown} failed ({why(exc)})") from None
        self._at += len(data)
        self._want = self._at
        return data

    def _move(self) -> None:
        """Bring the current response to ``_want``: read on over a short gap, else a new range request."""
        gap = self._want - self._at
        if 0 < gap <= SKIP_AHEAD:
            while self._at < self._want and (data := self._resp.read1(self._want - self._at)):
                self._at += len(data)
            if self._at == self._want:
                return
        assert self._reopen is not None and self._size is not None  # seek() only moves a seekable body
        self.close()
        if self._want >= self._size:  # at or past the end: nothing to ask for
            self._at = self._want
            return
        self._conn, self._resp = self._reopen(self._want)
        self._at = self._want

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


class _Empty:
    """The body given to every open after a failure: nothing (FFmpeg reads end of file)."""

    def read(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


class GuardedOpener:
    """``io_open`` for ``av.open`` of the URL ``first``: serves every open FFmpeg makes for it (see the
    module doc). ``timeout_s``: connect and read timeout of each request, in seconds."""

    def __init__(self, first: str, policy: NetworkPolicy, timeout_s: float) -> None:
        scheme = urlsplit(first).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs can be guarded, got {scheme!r}")
        self.scheme, self.policy, self.timeout_s = scheme, policy, timeout_s
        self.failed: SourceError | None = None
        """The first error raised to FFmpeg; from then on, opens get empty bodies."""

    def __call__(self, url: str, flags: int, options: Mapping[str, str]) -> _Body | _Empty:
        if self.failed is not None:
            return _Empty()
        try:
            return self._open(url, flags, options)
        except SourceError as exc:
            self.failed = exc
            raise

    def _open(self, url: str, flags: int, options: Mapping[str, str]) -> _Body:
        shown = redact(url)
        if flags & AVIO_FLAG_WRITE:
            raise ForbiddenUrl(f"{shown} may not be opened for writing")
        classify(url, (self.scheme,), False)  # the scheme of the first URL only: no downgrade, no file:
        addresses = check_network(url, self.policy)
        start, end = int(options.get("offset") or 0), int(options.get("end_offset") or 0)
        span = None
        if start or end:  # a byte-range segment: FFmpeg passes its span as offset/end_offset
            span = f"bytes={start}-{end - 1 if end > start else ''}"
        conn, resp, address = self._get(url, addresses, span)
        if not 200 <= resp.status < 300:
            raise self._refusal(conn, resp, shown)
        size = _length(resp) if span is None and resp.status == 200 else None
        if size is None:
            return _Body((conn, resp), shown)

        def reopen(offset: int) -> Response:
            """The same URL from ``offset`` on, at the address of the first request (no new lookup)."""
            again, answer, _ = self._get(url, (address,), f"bytes={offset}-")
            if answer.status == 206 and _range_start(answer) == offset:
                return again, answer
            if not 200 <= answer.status < 300:
                raise self._refusal(again, answer, shown)
            answer.close()
            again.close()
            raise UnreachableSource(f"{shown} did not honour a range request (HTTP {answer.status})")

        return _Body((conn, resp), shown, size, reopen)

    @staticmethod
    def _refusal(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, shown: str) -> SourceError:
        resp.close()
        conn.close()
        if 300 <= resp.status < 400:
            return ForbiddenUrl(
                f"{shown} redirects (HTTP {resp.status}); redirects are not followed, give the final address"
            )
        return UnreachableSource(f"{shown} answered HTTP {resp.status}")

    def _get(
        self, url: str, addresses: tuple[str, ...], span: str | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """Connect to the first of the checked ``addresses`` that accepts, send the GET (``span``: its Range
        header) and read the status and headers; returns them with the address connected to."""
        shown = redact(url)
        parts = urlsplit(url)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
        if span is not None:
            headers["Range"] = span
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode("ascii")
        conn = self._connect(parts.hostname or "", parts.port, addresses, shown)
        address = str(conn.sock.getpeername()[0])
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers=headers)
            return conn, conn.getresponse(), address
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UnreachableSource(f"{shown} could not be reached ({why(exc)})") from None

    def _connect(
        self, host: str, port: int | None, addresses: tuple[str, ...], shown: str
    ) -> http.client.HTTPConnection:
        """A connection to the first of the checked ``addresses`` that accepts one (``host`` is only named
        in the Host header and, for https, in SNI and the certificate check)."""
        https = self.scheme == "https"
        port = port or (443 if https else 80)
        error: OSError | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), timeout=self.timeout_s)
            except OSError as exc:
                error = exc
                continue
            conn: http.client.HTTPConnection
            if https:
                context = ssl.create_default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=host)
                except OSError as exc:
                    sock.close()
                    raise UnreachableSource(f"TLS with {shown} failed ({why(exc)})") from None
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout_s, context=context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
            conn.sock = sock  # already connected: http.client does not look the name up again
            return conn
        reason = why(error) if error is not None else "no address"
        raise UnreachableSource(f"{shown} could not be reached ({reason})")


def _length(resp: http.client.HTTPResponse) -> int | None:
    """The length of a whole resource whose server takes byte ranges, or None (not seekable)."""
    length = resp.getheader("Content-Length", "")
    if resp.getheader("Accept-Ranges", "").strip().lower() != "bytes" or not length.strip().isdigit():
        return None
    return int(length)


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    """The first byte offset of a 206 answer's ``Content-Range: bytes <start>-<end>/<size>``, or None."""
    unit, _, span = resp.getheader("Content-Range", "").strip().partition(" ")
    start = span.partition("-")[0]
    return int(start) if unit.lower() == "bytes" and start.isdigit() else None
