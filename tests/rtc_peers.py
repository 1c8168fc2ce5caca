"""A browser stand-in for the WebRTC tests: an aiortc client ``RTCPeerConnection`` on an event loop of its
own (a daemon thread), driven synchronously from the test, and video tracks whose frames the test
controls (a synthetic one that can go silent, or a real clip through ``MediaPlayer``).

The server under test runs its own loop (the TestClient's portal thread), so the two peers never share a
loop, exactly as a browser and the API never do. Everything started here is stopped by ``close()``.
"""

from __future__ import annotations

import asyncio
import fractions
import re
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.stream.clips import pattern

T = TypeVar("T")

VIDEO_CLOCK = 90_000


class LoopThread:
    """An asyncio event loop running in a daemon thread; ``call`` runs a coroutine on it and waits."""

    def __init__(self, name: str = "test-rtc-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        """Cancel what is left on the loop, stop it and join its thread."""
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.call(_cancel_rest(), timeout_s=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()


class SyntheticTrack(MediaStreamTrack):
    """A video track sending a moving gradient at ``fps`` in real time, until ``go_silent()``: from then on
    ``recv`` waits (the connection stays up, no frame is sent), as a frozen browser tab would."""

    kind = "video"

    def __init__(self, size: tuple[int, int] = (320, 240), fps: float = 15.0, period: int = 16) -> None:
        super().__init__()
        self.size, self.fps = size, fps
        self.frames_sent = 0
        self._images = [pattern(i, size) for i in range(period)]
        self._silent = threading.Event()
        self._start: float | None = None

    def go_silent(self) -> None:
        self._silent.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while self._silent.is_set():
            await asyncio.sleep(0.05)
            if self.readyState != "live":
                raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        i = self.frames_sent
        wait = self._start + i / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self._images[i % len(self._images)], format="rgb24")
        frame.pts = int(i * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame


class BrowserPeer:
    """One client peer connection sending ``track`` (plus an audio transceiver with ``audio``)."""

    def __init__(self, loop: LoopThread) -> None:
        self._loop = loop
        self.pc: RTCPeerConnection | None = None
        self.player: MediaPlayer | None = None
        self.track: MediaStreamTrack | None = None

    @classmethod
    def with_track(cls, loop: LoopThread, track: MediaStreamTrack) -> BrowserPeer:
        peer = cls(loop)
        peer.track = track
        return peer

    @classmethod
    def with_clip(cls, loop: LoopThread, clip: Path) -> BrowserPeer:
        """Send a real clip, looped, as a browser sends a camera (MediaPlayer decodes it in a thread)."""
        peer = cls(loop)

        async def _open() -> MediaPlayer:
            return MediaPlayer(str(clip), loop=True)

        peer.player = loop.call(_open())
        peer.track = peer.player.video
        return peer

    def offer(self, *, audio: bool = False) -> str:
        """Create the connection and its offer; the SDP carries the gathered candidates (vanilla ICE)."""

        async def _offer() -> str:
            self.pc = pc = RTCPeerConnection()
            if self.track is not None:
                pc.addTrack(self.track)
            if audio:
                pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp

        return self._loop.call(_offer())

    def accept(self, answer_sdp: str) -> None:
        async def _accept() -> None:
            assert self.pc is not None
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

        self._loop.call(_accept())

    @property
    def connection_state(self) -> str:
        return "new" if self.pc is None else str(self.pc.connectionState)

    def close(self) -> None:
        """Close the connection and stop the track and the player (idempotent)."""

        async def _close() -> None:
            if self.pc is not None:
                await self.pc.close()
            if self.track is not None:
                self.track.stop()
            if self.player is not None and self.player.audio is not None:
                self.player.audio.stop()

        self._loop.call(_close())


# ---- SDP surgery on a real offer (its ICE credentials, fingerprint and candidates stay valid) ----


def drop_lines(sdp: str, prefix: str) -> str:
    """``sdp`` without the lines starting with ``prefix`` (e.g. "a=fingerprint:")."""
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def drop_section(sdp: str, kind: str) -> str:
    """``sdp`` without its media sections of ``kind`` ("audio", "video")."""
    sections = re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)
    return "".join(s for s in sections if not s.startswith(f"m={kind} "))


def only_codec(sdp: str, kind: str, codec: str, *, rename: str | None = None, fmtp: str | None = None) -> str:
    """``sdp`` whose ``kind`` sections offer only the formats of ``codec`` (no rtx), the codec renamed to
    ``rename`` and its fmtp parameters replaced by ``fmtp`` if given."""
    out = []
    for section in re.split(r"(?=^m=)", sdp, flags=re.MULTILINE):
        if not section.startswith(f"m={kind} "):
            out.append(section)
            continue
        names = dict(re.findall(r"^a=rtpmap:(\d+) ([^/\r\n]+)/", section, flags=re.MULTILINE))
        kept = [pt for pt, name in names.items() if name.lower() == codec.lower()]
        assert kept, f"no {codec} in the {kind} section"
        lines = section.splitlines(keepends=True)
        mline = lines[0].rstrip("\r\n").split(" ")
        nl = lines[0][len(lines[0].rstrip("\r\n")) :]
        new = [" ".join(mline[:3] + kept) + nl]
        for line in lines[1:]:
            m = re.match(r"a=(rtpmap|fmtp|rtcp-fb):(\d+)", line)
            if m and m.group(2) not in kept:
                continue
            if m and m.group(1) == "rtpmap" and rename is not None:
                line = re.sub(r" [^/\s]+/", f" {rename}/", line, count=1)
            if m and m.group(1) == "fmtp" and fmtp is not None:
                line = f"a=fmtp:{m.group(2)} {fmtp}{nl}"
            new.append(line)
        out.append("".join(new))
    return "".join(out)


def set_direction(sdp: str, kind: str, direction: str) -> str:
    """``sdp`` whose ``kind`` sections have the direction ``direction`` (sendrecv, recvonly, inactive ...)."""
    out = []
    for section in re.split(r"(?=^m=)", sdp, flags=re.MULTILINE):
        if section.startswith(f"m={kind} "):
            section = re.sub(r"^a=(sendrecv|sendonly|recvonly|inactive)(?=\r?$)", f"a={direction}", section,
                             flags=re.MULTILINE)  # fmt: skip
        out.append(section)
    return "".join(out)


def with_candidates(sdp: str, candidates: list[str]) -> str:
    """``sdp`` whose every media section names exactly ``candidates`` (the text after "a=candidate:"),
    its own candidates and end-of-candidates removed."""
    nl = "\r\n" if "\r\n" in sdp else "\n"
    out = []
    for section in re.split(r"(?=^m=)", sdp, flags=re.MULTILINE):
        lines = [
            ln for ln in section.splitlines() if not ln.startswith(("a=candidate:", "a=end-of-candidates"))
        ]
        if section.startswith("m="):
            at = next(i for i, ln in enumerate(lines) if ln.startswith("a=ice-pwd:")) + 1
            lines[at:at] = [f"a=candidate:{c}" for c in candidates]
        out.append(nl.join(lines) + nl if lines else "")
    return "".join(out)
