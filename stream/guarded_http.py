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
- sends one GET, like FFmpeg's: ``Range: bytes=0-`` (or the span of a byte-range segment) and no
  credentials; on a 401 it answers the server's challenge once (``stream.http_auth``: Basic, Digest)
  with the URL's user name and password, on the same address. It follows no redirect (ForbiddenUrl),
  turns HTTP errors into UnreachableSource, and verifies TLS certificates by the policy's rule
  (``NetworkPolicy.verifies_tls``, ``stream.tls``);
- returns the response body, read as FFmpeg asks for it. A body of known length that the server
  answered as a range (``206`` with ``Content-Range: bytes 0-…/<size>``) or announced with
  ``Accept-Ranges: bytes`` is seekable (an MP4 with its index at the end): a seek is remembered, and
  the next read far from the current position asks for ``Range: bytes=<pos>-`` on a new connection to
  the *same* address (no lookup). Other bodies (MJPEG's endless one) are read forward only.

Time limits (``Timeouts``): PyAV's ``timeout=(open, read)`` is enforced by FFmpeg's interrupt callback,
which FFmpeg does not consult while it reads through a Python file object, and a socket timeout only
limits the wait for each next byte. So every wait here (connect, TLS handshake, send, each receive) is
held to the limit of the step it belongs to: while the container opens, one deadline for everything;
after that, each read and each new request may wait the read timeout for its first byte. A passed limit
is UnreachableSource.

PyAV re-raises an exception from here at the ``av.open`` or read that caused it. FFmpeg's HLS demuxer skips
a segment it could not open and tries the next one, so after the first failure (a refusal, an HTTP error,
an unreachable host) every later open of the container gets an empty body without any request: the first
error surfaces once, at the next read, and nothing more is fetched. A live reader then reopens the feed.

Standard library only; knows nothing about PyAV beyond the ``io_open`` signature.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from stream.errors import ForbiddenUrl, SourceError, UnreachableSource, why
from stream.http_auth import Login, choose, parse_challenges
from stream.tls import client_context, tls_failure
from stream.urls import NetworkPolicy, check_network, classify, redact

AVIO_FLAG_WRITE = 2
"""FFmpeg's flag for an open for writing (``io_open``'s ``flags``): never granted."""

USER_AGENT = "vidmem"

SKIP_AHEAD = 256 * 1024
"""A read this many bytes or fewer past the current position reads on and drops the gap instead of
asking for a new range (no new connection)."""

SEEK_FAILED = -1
"""What ``seek`` returns to FFmpeg for a seek it cannot do (an error code, not an exception)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """When one step (a request up to its headers, or one read) must have ended: ``end`` (monotonic
    seconds), and ``what`` the URL then failed to do, for the message."""

    end: float
    what: str

    def left(self, shown: str) -> float:
        """Seconds left (> 0); raises ``passed`` once none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.passed(shown)
        return left

    def passed(self, shown: str) -> UnreachableSource:
        return UnreachableSource(f"{shown} {self.what}")


class Timeouts:
    """The time limits of one container's requests: PyAV's ``timeout=(open_s, read_s)``, kept in Python.

    From its creation until ``opened()``, the container is opening: every connection, handshake, request
    and read of that time must end within ``open_s`` together, like PyAV's open timeout. After it, each
    step (one read, or one new request up to its headers: an HLS segment, a range) may wait ``read_s``,
    like FFmpeg's ``rw_timeout``: a live feed that keeps sending is read on, a silent one fails. A live
    HLS read waits for its next segment between requests, not within one, so ``read_s`` is the read
    timeout the source was opened with (``hls_read_timeout_s`` for a playlist URL).
    """

    def __init__(self, open_s: float, read_s: float) -> None:
        if not (open_s > 0 and read_s > 0):
            raise ValueError(f"timeouts must be > 0, got open {open_s}, read {read_s}")
        self.open_s, self.read_s = open_s, read_s
        self._opening_until: float | None = time.monotonic() + open_s

    def opened(self) -> None:
        """The container is open: from now on each step gets ``read_s``."""
        self._opening_until = None

    def step(self) -> Limit:
        """The limit of a step starting now."""
        if self._opening_until is not None:
            return Limit(self._opening_until, f"did not open within {self.open_s:g} s (open timeout)")
        return Limit(time.monotonic() + self.read_s, f"sent nothing for {self.read_s:g} s (read timeout)")


class _Wire(io.RawIOBase):
    """The receiving side of a connection: every wait for bytes is held to ``limit`` (set per step)."""

    def __init__(self, sock: socket.socket, shown: str, limit: Limit) -> None:
        super().__init__()
        self.sock, self.shown, self.limit = sock, shown, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.sock.settimeout(self.limit.left(self.shown))
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise self.limit.passed(self.shown) from None


class _Connection:
    """One connection to a checked ``address`` and the response read on it (``http.client.HTTPResponse``
    reads what ``makefile`` gives)."""

    def __init__(self, sock: socket.socket, address: str, shown: str, limit: Limit) -> None:
        self.sock, self.address = sock, address
        self.wire = _Wire(sock, shown, limit)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self.wire)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.wire.limit.left(self.wire.shown))  # sendall: one deadline for all
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise self.wire.limit.passed(self.wire.shown) from None

    def close(self) -> None:
        self.sock.close()


Response = tuple[_Connection, http.client.HTTPResponse]


class _Body:
    """An HTTP response body, read the way FFmpeg reads (``read(n)``: at most n bytes, b"" at the end).

    Each ``read`` is one step of ``timeouts``. With ``size`` (the resource's length) and ``reopen`` (a GET
    of the same URL at the same address from a byte offset), it is seekable: ``seek`` only moves the
    position, the next ``read`` far from where the current response stands asks for a new range (see the
    module doc)."""

    def __init__(
        self,
        response: Response,
        shown: str,
        timeouts: Timeouts,
        size: int | None = None,
        reopen: Callable[[int, Limit], Response] | None = None,
    ) -> None:
        self._conn, self._resp = response
        self._shown, self._timeouts, self._size, self._reopen = shown, timeouts, size, reopen
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
        limit = self._timeouts.step()
        self._conn.wire.limit = limit
        try:
            if self._want != self._at:
                self._move(limit)
            if self._size is not None and self._at >= self._size:
                return b""
            data = self._resp.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise UnreachableSource(f"reading {self._shown} failed ({why(exc)})") from None
        self._at += len(data)
        self._want = self._at
        return data

    def _move(self, limit: Limit) -> None:
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
        self._conn, self._resp = self._reopen(self._want, limit)
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
    module doc), within ``timeouts`` (call ``timeouts.opened()`` once ``av.open`` has returned)."""

    def __init__(self, first: str, policy: NetworkPolicy, timeouts: Timeouts) -> None:
        scheme = urlsplit(first).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs can be guarded, got {scheme!r}")
        self.scheme, self.policy, self.timeouts = scheme, policy, timeouts
        self.failed: SourceError | None = None
        """The first error raised to FFmpeg; from then on, opens get empty bodies."""
        self._logins: dict[tuple[str, int, str], Login] = {}
        """The login that answered a server's challenge, by (host, port, user): later requests to that
        server send it at once (FFmpeg's http keeps its auth state the same way)."""

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
        whole = not (start or end)  # else a byte-range segment: FFmpeg passes its span as offset/end_offset
        span = "bytes=0-" if whole else f"bytes={start}-{end - 1 if end > start else ''}"
        limit = self.timeouts.step()
        conn, resp = self._get(url, addresses, span, limit)
        if not 200 <= resp.status < 300:
            raise self._refusal(conn, resp, shown)
        size = _size(resp, conn, shown) if whole else None
        if size is None:
            return _Body((conn, resp), shown, self.timeouts)

        def reopen(offset: int, limit: Limit) -> Response:
            """The same URL from ``offset`` on, at the address of the first request (no new lookup)."""
            again, answer = self._get(url, (conn.address,), f"bytes={offset}-", limit)
            if answer.status == 206 and _range(answer)[0] == offset:
                return again, answer
            if not 200 <= answer.status < 300:
                raise self._refusal(again, answer, shown)
            answer.close()
            again.close()
            raise UnreachableSource(f"{shown} did not honour a range request (HTTP {answer.status})")

        return _Body((conn, resp), shown, self.timeouts, size, reopen)

    @staticmethod
    def _refusal(conn: _Connection, resp: http.client.HTTPResponse, shown: str) -> SourceError:
        resp.close()
        conn.close()
        if 300 <= resp.status < 400:
            return ForbiddenUrl(
                f"{shown} redirects (HTTP {resp.status}); redirects are not followed, give the final address"
            )
        if resp.status == 401:
            return UnreachableSource(f"{shown} answered HTTP 401: give a login as user:password@ in it")
        return UnreachableSource(f"{shown} answered HTTP {resp.status}")

    def _get(self, url: str, addresses: tuple[str, ...], span: str, limit: Limit) -> Response:
        """The GET of ``url`` (``span``: its Range) at the first of the checked ``addresses`` that accepts
        a connection, up to the response's headers, within ``limit``. A 401 to a URL with credentials is
        answered once, at the same address; a second 401 is UnreachableSource."""
        shown = redact(url)
        parts = urlsplit(url)
        port = parts.port or (443 if self.scheme == "https" else 80)
        key = (parts.hostname or "", port, unquote(parts.username or ""))
        conn, resp = self._request(parts, addresses, span, limit, self._logins.get(key))
        if resp.status != 401 or parts.username is None:
            return conn, resp
        challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
        resp.close()
        conn.close()
        challenge = choose(challenges)
        if challenge is None:
            offered = ", ".join(sorted({c.scheme for c in challenges})) or "none"
            raise UnreachableSource(f"{shown} asks for a login this client cannot give (offered: {offered})")
        try:
            login = Login(challenge, unquote(parts.username), unquote(parts.password or ""))
        except ValueError:
            raise ForbiddenUrl(f"the user name or password of {shown} holds control characters") from None
        conn, resp = self._request(parts, (conn.address,), span, limit, login)
        if resp.status == 401:
            resp.close()
            conn.close()
            raise UnreachableSource(f"{shown}: the credentials were refused (HTTP 401, {login.scheme} login)")
        self._logins[key] = login
        return conn, resp

    def _request(
        self, parts: SplitResult, addresses: tuple[str, ...], span: str, limit: Limit, login: Login | None
    ) -> Response:
        """Connect, send one GET (signed by ``login``, if any) and read the status and headers."""
        shown = redact(parts.geturl())
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Host": parts.netloc.rpartition("@")[2],
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Range": span,
            "Connection": "close",
        }
        if login is not None:
            headers["Authorization"] = login.authorization("GET", target)
        head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        conn = self._connect(parts.hostname or "", parts.port, addresses, limit, shown)
        resp = http.client.HTTPResponse(conn, method="GET")  # type: ignore[arg-type]
        try:
            conn.send(head.encode())
            resp.begin()
            return conn, resp
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UnreachableSource(f"{shown} could not be reached ({why(exc)})") from None
        except SourceError:
            conn.close()
            raise

    def _connect(
        self, host: str, port: int | None, addresses: tuple[str, ...], limit: Limit, shown: str
    ) -> _Connection:
        """A connection to the first of the checked ``addresses`` that accepts one within ``limit`` (all
        of them together), TLS included for https (``host`` is only named in SNI and the certificate
        check)."""
        https = self.scheme == "https"
        port = port or (443 if https else 80)
        error: OSError | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), timeout=limit.left(shown))
            except TimeoutError:
                raise limit.passed(shown) from None
            except OSError as exc:
                error = exc
                continue
            if https:
                try:
                    sock = self._tls(sock, host, address, limit, shown)
                except BaseException:
                    sock.close()
                    raise
            return _Connection(sock, address, shown, limit)
        reason = why(error) if error is not None else "no address"
        raise UnreachableSource(f"{shown} could not be reached ({reason})")

    def _tls(self, sock: socket.socket, host: str, address: str, limit: Limit, shown: str) -> ssl.SSLSocket:
        """TLS over ``sock`` within ``limit``: SNI ``host``, the certificate verified when the policy's
        rule says so for ``address`` (``NetworkPolicy.verifies_tls``)."""
        context = client_context(self.policy.verifies_tls(address))
        sock.settimeout(limit.left(shown))  # the whole handshake: CPython keeps one deadline for it
        try:
            return context.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            raise limit.passed(shown) from None
        except OSError as exc:
            raise tls_failure(shown, exc, self.policy.tls_hint) from None


def _range(resp: http.client.HTTPResponse) -> tuple[int | None, int | None]:
    """The first byte offset and the resource's size of a 206 answer's
    ``Content-Range: bytes <start>-<end>/<size>`` (each None when absent or unknown, ``*``)."""
    unit, _, span = resp.getheader("Content-Range", "").strip().partition(" ")
    if unit.lower() != "bytes":
        return None, None
    first, _, size = span.partition("/")
    start = first.partition("-")[0].strip()
    return (int(start) if start.isdigit() else None, int(size) if size.strip().isdigit() else None)


def _size(resp: http.client.HTTPResponse, conn: _Connection, shown: str) -> int | None:
    """The resource's length when its body can be read by ranges (FFmpeg's rule: a 206 to ``bytes=0-``
    with its size in ``Content-Range``, or ``Accept-Ranges: bytes`` with a ``Content-Length``), else None
    (read forward only)."""
    if resp.status == 206:
        start, size = _range(resp)
        if start is not None and start != 0:
            resp.close()
            conn.close()
            raise UnreachableSource(f"{shown} did not honour a range request (HTTP 206 from byte {start})")
        return size
    length = resp.getheader("Content-Length", "").strip()
    if resp.getheader("Accept-Ranges", "").strip().lower() != "bytes" or not length.isdigit():
        return None
    return int(length)
