"""HTTP(S) requests made in Python on FFmpeg's behalf (PyAV's ``io_open``), each checked by a NetworkPolicy.

FFmpeg's HLS demuxer opens every playlist reload, segment, key and init section itself, at whatever host
the playlist names, and the ``max_redirects`` given to the first open is not passed on to those opens.
PyAV can route every open of one container through a Python callable (``av.open(..., io_open=...)``)
that must return a file-like object; FFmpeg's own protocols are then not used by that container at all.
``GuardedOpener`` is that callable. For each URL FFmpeg asks for, it

- accepts only the scheme of the playlist itself (https stays https), checked like a client's URL
  (``stream.urls.classify``);
- resolves the host and checks every address (``check_network``), then connects to a checked address
  itself: there is no second lookup, so the name cannot be re-pointed between check and connection;
- sends one GET (with ``Range`` for byte-range segments), follows no redirect (ForbiddenUrl), turns HTTP
  errors into UnreachableSource, and verifies TLS certificates (FFmpeg's https does not by default);
- returns the response body, read as FFmpeg asks for it (no seeking).

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
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from stream.errors import ForbiddenUrl, SourceError, UnreachableSource
from stream.urls import NetworkPolicy, check_network, classify, redact

AVIO_FLAG_WRITE = 2
"""FFmpeg's flag for an open for writing (``io_open``'s ``flags``): never granted."""

USER_AGENT = "vidmem"


def _why(exc: BaseException) -> str:
    """An exception in words, without the text of the URL."""
    detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class _Body:
    """An HTTP response body, read the way FFmpeg reads (``read(n)``: at most n bytes, b"" at the end)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, shown: str) -> None:
        self._conn, self._resp, self._shown = conn, resp, shown

    def read(self, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            return self._resp.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise UnreachableSource(f"reading {self._shown} failed ({_why(exc)})") from None

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
        conn, resp = self._request(url, options)
        if 200 <= resp.status < 300:
            return _Body(conn, resp, shown)
        resp.close()
        conn.close()
        if 300 <= resp.status < 400:
            raise ForbiddenUrl(
                f"{shown} redirects (HTTP {resp.status}); redirects are not followed, give the final address"
            )
        raise UnreachableSource(f"{shown} answered HTTP {resp.status}")

    def redirects(self, url: str) -> bool:
        """Whether a GET of ``url`` (checked like any other) is answered with a redirect; reads no body."""
        conn, resp = self._request(url, {})
        resp.close()
        conn.close()
        return 300 <= resp.status < 400

    def _request(
        self, url: str, options: Mapping[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Check ``url``, connect to a checked address, send the GET and read the status and headers."""
        shown = redact(url)
        classify(url, (self.scheme,), False)  # the scheme of the first URL only: no downgrade, no file:
        addresses = check_network(url, self.policy)
        parts = urlsplit(url)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
        start, end = int(options.get("offset") or 0), int(options.get("end_offset") or 0)
        if start or end:  # a byte-range segment: FFmpeg passes its span as offset/end_offset
            headers["Range"] = f"bytes={start}-{end - 1 if end > start else ''}"
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode("ascii")
        conn = self._connect(parts.hostname or "", parts.port, addresses, shown)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UnreachableSource(f"{shown} could not be reached ({_why(exc)})") from None

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
                    raise UnreachableSource(f"TLS with {shown} failed ({_why(exc)})") from None
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout_s, context=context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
            conn.sock = sock  # already connected: http.client does not look the name up again
            return conn
        why = _why(error) if error is not None else "no address"
        raise UnreachableSource(f"{shown} could not be reached ({why})")
