"""WebRTC signalling in the API process: answer a browser's offer, and hand its video track to a reader.

One ``RTCPeerConnection`` (aiortc) per browser, on the server's event loop. Its video track becomes a
``stream.webrtc.TrackSource`` that the process's ``LiveSupervisor`` *adopts*: from there the frames
travel exactly as a camera's do (lease-fenced hand-over, encode tasks, the bounded memory). When the
track ends (the browser left, the connection was not established within ``webrtc_ice_timeout_s``, or the
watchdog saw no frame for ``webrtc_watchdog_s``) or the stream is deleted (its reader closes the source),
the connection is closed and its place freed. Places are limited per process (``webrtc_max_peers``) and
per tenant in it (``webrtc_max_peers_per_tenant``); the stream also takes a place of the tenant's
``tenant_max_live_streams`` across processes (``api.quota``).

The offer's ICE candidates pass the URL network policy first (``api.sdp.screen_candidates``): aiortc
never learns a refused one, so no STUN packet goes there.

Offers are vanilla ICE (the browser gathers its candidates before sending the offer), and so is the
answer: aiortc gathers the server's before answering. The answer carries bitrate hints (``api.sdp``).

Knows nothing about torch or models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from fastapi.concurrency import run_in_threadpool

from api.quota import hold
from api.sdp import Screened, SdpError, check_offer, screen_candidates, with_bitrate_hints
from core.settings import Settings
from stream.webrtc import TrackConfig, TrackSource
from workers import service
from workers.live import LiveSupervisor
from workers.quotas import Reservation
from workers.runtime import Runtime
from workers.service import ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: str
    stream_id: str


def offer_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 among its host candidates (it leaves loopback out), so a browser on the
    same host with no other network, as in the tests, can connect. Idempotent; process-wide."""
    gather: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(gather, "with_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = gather(use_ipv4, use_ipv6)
        return [*addresses, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in addresses else addresses

    with_loopback.with_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


class Peers:
    """The WebRTC connections of this API process (pending ones included): at most ``webrtc_max_peers``,
    and at most ``webrtc_max_peers_per_tenant`` of one tenant."""

    def __init__(self, rt: Runtime, readers: LiveSupervisor) -> None:
        self.rt, self.readers = rt, readers
        self.settings: Settings = rt.settings
        self.connections: dict[str, RTCPeerConnection] = {}
        self._places: dict[object, str] = {}  # who holds each place: an offer being answered, or a stream
        self._closing: set[asyncio.Task[None]] = set()
        if self.settings.webrtc_loopback:
            offer_loopback_candidates()

    def __len__(self) -> int:
        return len(self._places)

    def ice_servers(self) -> list[RTCIceServer]:
        return [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in self.settings.webrtc_ice_servers
        ]

    async def answer(
        self, sdp: str, *, tenant: str, fps: float | None, budget: int | None, name: str
    ) -> Answer:
        """Answer an offer and start reading its video as a new stream of ``tenant``. Raises ServiceError
        (``code``: too_many_peers, bad_sdp, no_video, unsupported_codec) or QuotaExceeded."""
        self._check_room(tenant)
        try:
            screened = screen_candidates(
                sdp, self.rt.url_policy(), max_candidates=self.settings.webrtc_max_candidates
            )
            info = check_offer(screened.sdp)
        except SdpError as e:
            raise ServiceError(e.code, str(e)) from None
        if screened.refused:
            log.info("offer of tenant %s: candidates refused: %s", tenant, ", ".join(screened.refused))
        place = object()  # taken before any await: concurrent offers cannot all pass the limits
        self._places[place] = tenant
        try:
            async with hold(self.rt, tenant, "webrtc") as held:
                return await self._negotiate(
                    screened, place, held, tenant=tenant, fps=fps, budget=budget, name=name,
                    audio=info.has_audio,
                )  # fmt: skip
        finally:
            self._places.pop(place, None)

    def _check_room(self, tenant: str) -> None:
        s = self.settings
        if len(self) >= s.webrtc_max_peers:
            raise ServiceError(
                "too_many_peers",
                f"this server already holds {len(self)} WebRTC connections (webrtc_max_peers="
                f"{s.webrtc_max_peers}); stop one, or try again later",
            )
        mine = sum(1 for t in self._places.values() if t == tenant)
        if mine >= s.webrtc_max_peers_per_tenant:
            raise ServiceError(
                "too_many_peers",
                f"tenant {tenant!r} already holds {mine} WebRTC connections on this server (webrtc_max_"
                f"peers_per_tenant={s.webrtc_max_peers_per_tenant}); stop one, or try again later",
            )

    async def _negotiate(
        self,
        offer: Screened,
        place: object,
        held: Reservation,
        *,
        tenant: str,
        fps: float | None,
        budget: int | None,
        name: str,
        audio: bool,
    ) -> Answer:
        pc, video = await self._answer_offer(offer)
        sid: str | None = None
        try:
            sid = await run_in_threadpool(
                service.create_webrtc_stream, self.rt, tenant, fps=fps, budget=budget, name=name,
                reservation=held,
            )  # fmt: skip
            source = TrackSource(video, self._track_config(fps), on_end=partial(self._ended, sid))
            self.connections[sid] = pc
            self._places.pop(place, None)  # counted once: as a connection now
            self._places[sid] = tenant
            await run_in_threadpool(self.readers.adopt, sid, source)
        except BaseException as e:  # cancelled too: the connection and the stream are undone, then re-raised
            await pc.close()
            if sid is not None:
                self.connections.pop(sid, None)
                self._places.pop(sid, None)
                await run_in_threadpool(_give_up, self.rt, sid, e)
            raise
        self._watch(pc, source, offer)
        s = self.settings
        answer = with_bitrate_hints(
            pc.localDescription.sdp, start_kbps=s.webrtc_start_kbps, min_kbps=s.webrtc_min_kbps,
            max_kbps=s.webrtc_max_kbps,
        )  # fmt: skip
        log.info("stream %s: WebRTC offer answered (%s)", sid, "audio ignored" if audio else "video only")
        return Answer(sdp=answer, stream_id=sid)

    async def _answer_offer(self, offer: Screened) -> tuple[RTCPeerConnection, MediaStreamTrack]:
        """A peer connection that answers ``offer`` (its local description set), and the one video track
        it receives; every other track is made inactive. Raises ServiceError (``no_video``, ``bad_sdp``)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers()))  # [] : no default STUN
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            video = [t for t in tracks if t.kind == "video"]
            if not video:
                raise ServiceError("no_video", "the offer sends no video track")
            for tr in pc.getTransceivers():  # one video track per connection; never receive audio
                if tr.receiver.track is not video[0]:
                    tr.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
            return pc, video[0]
        except ServiceError:
            await pc.close()
            raise
        except Exception as e:  # aiortc refuses what check_offer did not foresee: still the client's offer
            await pc.close()
            log.info("offer refused by aiortc: %s: %s", type(e).__name__, e)
            raise ServiceError("bad_sdp", f"the offer cannot be answered ({type(e).__name__}: {e})") from None

    def _watch(self, pc: RTCPeerConnection, source: TrackSource, offer: Screened) -> None:
        """End the stream when its connection fails or closes, or is not connected (ICE and DTLS) within
        ``webrtc_ice_timeout_s``: an offer that never connects frees its place soon."""
        limit = self.settings.webrtc_ice_timeout_s
        why = f"the WebRTC connection was not established within {limit:g} s (webrtc_ice_timeout_s)"
        if offer.refused:
            shown = ", ".join(offer.refused[:3]) + (" ..." if len(offer.refused) > 3 else "")
            why += (
                f"; the network policy (VIDMEM_URL_ALLOWED_NETWORKS) refused the offer's candidates {shown}"
            )

        def _deadline() -> None:
            if pc.connectionState != "connected":
                source.end(why)

        deadline = asyncio.get_running_loop().call_later(limit, _deadline)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("connected", "failed", "closed"):
                deadline.cancel()
            if pc.connectionState in ("failed", "closed"):
                source.end(f"the WebRTC connection {pc.connectionState}")

    def _track_config(self, fps: float | None) -> TrackConfig:
        s = self.settings
        return TrackConfig(
            fps=fps or s.fps,
            size=(self.rt.frame_side(), self.rt.frame_side()),
            queue_size=s.live_queue,
            skip_similar=s.live_skip_similar,
            watchdog_s=s.webrtc_watchdog_s,
            first_frame_timeout_s=s.webrtc_connect_timeout_s,
        )

    def _ended(self, sid: str) -> None:
        """The track's consumer finished (on the loop): close the connection and free its place."""
        self._places.pop(sid, None)
        pc = self.connections.pop(sid, None)
        if pc is not None:
            task = asyncio.get_running_loop().create_task(pc.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """Close every connection (server shutdown), and wait for the closes already under way."""
        pcs, self.connections = list(self.connections.values()), {}
        self._places.clear()
        await asyncio.gather(*(pc.close() for pc in pcs), *self._closing, return_exceptions=True)


def _give_up(rt: Runtime, sid: str, error: BaseException) -> None:
    """A stream whose connection failed to start: stopped, saying why (never left "connecting")."""
    try:
        rt.records.set_stream_state(sid, "stopped", error=f"the WebRTC connection could not start: {error!r}")
    except Exception:  # the connection's own error is on its way up: this one must not replace it
        log.exception("stream %s: could not record that its connection failed to start", sid)
