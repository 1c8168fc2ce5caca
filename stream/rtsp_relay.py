"""A relay between FFmpeg and one RTSP camera, connected to an address that was checked, that refuses
every redirect the camera sends.

FFmpeg's RTSP client resolves the camera's host name itself and follows the camera's ``3xx`` replies to
any address (libavformat/rtsp.c), and no option turns either off. So for a client's RTSP URL FFmpeg
does not talk to the camera at all: it opens ``rtsp://[user:pass@]127.0.0.1:<port>/<path>`` of an
``RtspRelay``, which

- listens on 127.0.0.1 on an ephemeral port, for one connection (FFmpeg's; the listener then closes);
- connects to the camera at one of the addresses the caller checked (``stream.urls.check_network``),
  never looking the name up again, so the name cannot be re-pointed between check and connection; all
  addresses together get ``timeout_s``, TLS handshake included;
- for ``rtsps`` speaks TLS to the camera (with the camera's name as SNI) while FFmpeg speaks plain RTSP to
  the relay. The camera's certificate is verified by the policy's rule, the same as for https
  (``NetworkPolicy.verifies_tls``, ``stream.tls``): by default a public address must show a valid one,
  while a camera at an address the policy had to allow (a LAN camera, self-signed) is not verified;
- passes bytes both ways unchanged, and reads the camera's side with ``stream.rtsp_replies.ReplyGuard``
  (RTSP messages and the ``$``-framed interleaved RTP/RTCP of ``rtsp_transport=tcp``, which the caller
  always forces, so there is no other connection): at a redirect it closes both connections before the
  end of that reply reaches FFmpeg, and records why in ``refusal``.

Requests keep the relay's address in their URL (``OPTIONS rtsp://127.0.0.1:<port>/path``), and digest
authentication is computed by FFmpeg over that URL, which the camera checks against the ``uri`` that
FFmpeg sends with it, so both are left as they are. Control URLs of the SDP (relative, or absolute under a
Content-Base naming the camera) are only named in SETUP requests on the same connection.

One thread with its own asyncio loop per relay; ``close()`` ends it. Knows nothing about FFmpeg's API or
PyAV, and of the network policy only its TLS rule; standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from urllib.parse import urlsplit

from stream.errors import UnreachableSource, why
from stream.rtsp_replies import Refused, ReplyGuard
from stream.tls import client_context, tls_failure
from stream.urls import DEFAULT_NETWORK_POLICY, NetworkPolicy

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}
"""FFmpeg's default ports (RTSP_DEFAULT_PORT, RTSPS_DEFAULT_PORT)."""

CHUNK = 65536
"""Largest read from either side, in bytes."""

CLOSE_WAIT_S = 5.0
"""How long ``close()`` waits for the relay's thread."""


class RtspRelay:
    """Relay for the checked RTSP(S) URL ``url`` to the first of ``addresses`` that accepts a connection.

    ``with RtspRelay(...) as relay``: connects to the camera (raises UnreachableSource when no address
    accepts within ``timeout_s`` seconds for all of them, TLS handshake included, or the camera's
    certificate is refused by ``policy.verifies_tls``), then listens; FFmpeg opens ``relay.url``.
    ``refusal`` is the Refused that closed the relay, if any. ``shown`` names the URL in messages
    (credentials redacted by the caller).
    """

    def __init__(
        self,
        url: str,
        addresses: tuple[str, ...],
        timeout_s: float,
        shown: str,
        policy: NetworkPolicy = DEFAULT_NETWORK_POLICY,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an rtsp or rtsps URL: {shown}")
        self.host, self.tls = parts.hostname, parts.scheme == "rtsps"
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.addresses, self.timeout_s, self.shown, self.policy = addresses, timeout_s, shown, policy
        userinfo = parts.netloc.rpartition("@")[0]
        self._login = f"{userinfo}@" if userinfo else ""
        self._rest = url[len(f"{parts.scheme}://{parts.netloc}") :]  # path, query, fragment as given
        self.refusal: Refused | None = None
        self.listen_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vidmem-rtsp-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._camera: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Future[None]] = set()
        self._handler: asyncio.Task[None] | None = None  # _serve for FFmpeg's connection
        self._served = False

    @property
    def url(self) -> str:
        """What FFmpeg opens: plain rtsp to the relay, with the URL's credentials, path and query."""
        return f"rtsp://{self._login}127.0.0.1:{self.listen_port}{self._rest}"

    def __enter__(self) -> RtspRelay:
        self._thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
            self.listen_port = future.result(self.timeout_s + CLOSE_WAIT_S)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close both connections and the listener, and end the relay's thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(self._finish(), self._loop).result(CLOSE_WAIT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_WAIT_S)
        if not self._thread.is_alive():
            self._loop.close()

    # ---- the relay's thread ----------------------------------------------------------------------------

    async def _start(self) -> int:
        self._camera = await self._connect()
        self._writers.append(self._camera[1])
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._loop.call_later(self.timeout_s, self._give_up)  # FFmpeg never came
        return int(self._server.sockets[0].getsockname()[1])

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first checked address that accepts one (TLS for rtsps, verified by the
        policy's rule), all addresses together within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        error = "no address"
        for address in self.addresses:
            context = client_context(self.policy.verifies_tls(address)) if self.tls else None
            left = deadline - loop.time()
            if left <= 0:
                error = f"no connection within {self.timeout_s:g} s"
                break
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        address, self.port, ssl=context, server_hostname=self.host if context else None
                    ),
                    left,
                )
            except ssl.SSLError as exc:
                raise tls_failure(self.shown, exc, self.policy.tls_hint) from None
            except TimeoutError:
                error = f"no connection within {self.timeout_s:g} s"
                break
            except OSError as exc:
                error = why(exc)
        raise UnreachableSource(f"{self.shown} could not be reached ({error})")

    def _give_up(self) -> None:
        if not self._served:
            self._abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """FFmpeg's connection: the only one served; relay until either side ends or a redirect comes."""
        if self._served or self._camera is None:
            writer.transport.abort()
            return
        self._served = True
        self._handler = asyncio.current_task()
        self._writers.append(writer)
        assert self._server is not None
        self._server.close()  # no second client
        camera_reader, camera_writer = self._camera
        self._pumps = {
            asyncio.ensure_future(self._pump(reader, camera_writer, None)),
            asyncio.ensure_future(self._pump(camera_reader, writer, ReplyGuard())),
        }
        await asyncio.wait(self._pumps, return_when=asyncio.FIRST_COMPLETED)
        await self._shutdown()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, guard: ReplyGuard | None
    ) -> None:
        """Copy ``reader`` to ``writer`` until the end or an error; ``guard`` reads every chunk first."""
        try:
            while data := await reader.read(CHUNK):
                if guard is not None:
                    guard.feed(data)
                writer.write(data)
                await writer.drain()
        except Refused as exc:
            self.refusal = exc
        except (OSError, ssl.SSLError):
            pass  # a side hung up: the other one is closed too

    def _abort(self) -> None:
        """Stop listening and drop both connections at once (no TLS goodbye)."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def _shutdown(self) -> None:
        """``_abort``, and end the pumps."""
        self._abort()
        await _cancel(self._pumps)

    async def _finish(self) -> None:
        """``_shutdown``, then wait for FFmpeg's connection handler to end (cancelling the handler of
        ``asyncio.start_server`` would log an error), for ``close``."""
        await self._shutdown()
        if self._handler is not None:
            await asyncio.wait({self._handler}, timeout=CLOSE_WAIT_S)


async def _cancel(tasks: set[asyncio.Future[None]]) -> None:
    """Cancel ``tasks`` (but not the running one) and wait until they have ended."""
    current = asyncio.current_task()
    pending = [task for task in tasks if task is not current and not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
