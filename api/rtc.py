"""WebRTC signalling in the API process: answer a browser's offer, and hand its video track to a reader.

One ``RTCPeerConnection`` (aiortc) per browser, on the server's event loop. Its video track becomes a
``stream.webrtc.TrackSource`` that the process's ``LiveSupervisor`` *adopts*: from there the frames
travel exactly as a camera's do (lease-fenced hand-over, encode tasks, the bounded memory). When the
track ends (the browser left, or the watchdog saw no frame for ``webrtc_watchdog_s``) or the stream is
deleted (its reader closes the source), the connection is closed and its place freed.

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

from api.sdp import SdpError, check_offer, with_bitrate_hints
from stream.webrtc import TrackConfig, TrackSource
from vidmem.settings import Settings
from workers import service
from workers.live import LiveSupervisor
from workers.quotas import check_stream_quota
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
    """The WebRTC connections of this API process, at most ``webrtc_max_peers`` (pending ones included)."""

    def __init__(self, rt: Runtime, readers: LiveSupervisor) -> None:
        self.rt, self.readers = rt, readers
        self.settings: Settings = rt.settings
        self.connections: dict[str, RTCPeerConnection] = {}
        self._negotiating: set[object] = set()  # offers being answered: they count against the limit
        self._closing: set[asyncio.Task[None]] = set()
        if self.settings.webrtc_loopback:
            offer_loopback_candidates()

    def __len__(self) -> int:
        return len(self.connections) + len(self._negotiating)

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
        await run_in_threadpool(check_stream_quota, self.rt, tenant, "webrtc")
        if len(self) >= self.settings.webrtc_max_peers:
            raise ServiceError(
                "too_many_peers",
                f"this server already holds {len(self)} WebRTC connections (webrtc_max_peers="
                f"{self.settings.webrtc_max_peers}); stop one, or try again later",
            )
        try:
            info = check_offer(sdp)
        except SdpError as e:
            raise ServiceError(e.code, str(e)) from None
        place = object()  # taken before any await: concurrent offers cannot all pass the limit
        self._negotiating.add(place)
        try:
            return await self._negotiate(
                sdp, place, tenant=tenant, fps=fps, budget=budget, name=name, audio=info.has_audio
            )
        finally:
            self._negotiating.discard(place)

    async def _negotiate(
        self,
        sdp: str,
        place: object,
        *,
        tenant: str,
        fps: float | None,
        budget: int | None,
        name: str,
        audio: bool,
    ) -> Answer:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers()))  # [] : no default STUN
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            video = [t for t in tracks if t.kind == "video"]
            if not video:
                raise ServiceError("no_video", "the offer sends no video track")
            for tr in pc.getTransceivers():  # one video track per connection; never receive audio
                if tr.receiver.track is not video[0]:
                    tr.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        except ServiceError:
            await pc.close()
            raise
        except Exception as e:  # aiortc refuses what check_offer did not foresee: still the client's offer
            await pc.close()
            log.info("offer refused by aiortc: %s: %s", type(e).__name__, e)
            raise ServiceError("bad_sdp", f"the offer cannot be answered ({type(e).__name__}: {e})") from None
        sid: str | None = None
        try:
            sid = await run_in_threadpool(
                service.create_webrtc_stream, self.rt, tenant, fps=fps, budget=budget, name=name
            )
            source = TrackSource(video[0], self._track_config(fps), on_end=partial(self._ended, sid))
            self.connections[sid] = pc
            self._negotiating.discard(place)  # counted once: as a connection now
            await run_in_threadpool(self.readers.adopt, sid, source)
        except BaseException as e:
            await pc.close()
            if sid is not None:
                self.connections.pop(sid, None)
                await run_in_threadpool(_give_up, self.rt, sid, e)
            raise

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                source.end(f"the WebRTC connection {pc.connectionState}")

        s = self.settings
        answer = with_bitrate_hints(
            pc.localDescription.sdp, start_kbps=s.webrtc_start_kbps, min_kbps=s.webrtc_min_kbps,
            max_kbps=s.webrtc_max_kbps,
        )  # fmt: skip
        log.info("stream %s: WebRTC offer answered (%s)", sid, "audio ignored" if audio else "video only")
        return Answer(sdp=answer, stream_id=sid)

    def _track_config(self, fps: float | None) -> TrackConfig:
        s = self.settings
        return TrackConfig(
            fps=fps or s.fps,
            size=(s.frame_size, s.frame_size),
            queue_size=s.live_queue,
            skip_similar=s.live_skip_similar,
            watchdog_s=s.webrtc_watchdog_s,
            first_frame_timeout_s=s.webrtc_connect_timeout_s,
        )

    def _ended(self, sid: str) -> None:
        """The track's consumer finished (on the loop): close the connection and free its place."""
        pc = self.connections.pop(sid, None)
        if pc is not None:
            task = asyncio.get_running_loop().create_task(pc.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """Close every connection (server shutdown), and wait for the closes already under way."""
        pcs, self.connections = list(self.connections.values()), {}
        await asyncio.gather(*(pc.close() for pc in pcs), *self._closing, return_exceptions=True)


def _give_up(rt: Runtime, sid: str, error: BaseException) -> None:
    """A stream whose connection failed to start: stopped, saying why (never left "connecting")."""
    try:
        rt.records.set_stream_state(sid, "stopped", error=f"the WebRTC connection could not start: {error!r}")
    except Exception:
        log.exception("stream %s: could not record that its connection failed to start", sid)
