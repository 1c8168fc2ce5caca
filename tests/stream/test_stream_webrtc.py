"""``stream.webrtc.TrackSource`` over fake aiortc video tracks whose frames the test controls (no network):
wall-clock sampling, resizing, seq/pts, the watchdog and the first-frame timeout, the peer leaving,
stop(), a full queue, near-identical frames, and a consumer that crashes."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.webrtc import PEER_LEFT, TrackConfig, TrackSource
from tests.rtc_peers import LoopThread
from tests.stream.clips import pattern
from tests.stream.live_helpers import collect, numbered, wait_for, wait_until

SIZE = (320, 240)


class FakeTrack(MediaStreamTrack):
    """A video track giving ``count`` frames (None: no end) at ``fps`` of real time (None: at once), then
    doing what ``after`` says: "hang" (recv never returns), "leave" (MediaStreamError, as aiortc's remote
    track when the connection closes) or "crash" (a bug: RuntimeError). ``static`` repeats one image."""

    kind = "video"

    def __init__(
        self,
        count: int | None = None,
        fps: float | None = 50.0,
        after: str = "hang",
        static: bool = False,
        size: tuple[int, int] = SIZE,
    ) -> None:
        super().__init__()
        self.count, self.fps, self.after = count, fps, after
        self.size = size
        self.images = [pattern(0 if static else i, size) for i in range(8)]
        self.given = 0
        self.recv_cancelled = threading.Event()
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        try:
            if self.count is not None and self.given >= self.count:
                if self.after == "leave":
                    raise MediaStreamError
                if self.after == "crash":
                    raise RuntimeError("decoder exploded")
                await asyncio.Event().wait()  # hang: a peer that is still connected but sends nothing
            if self._start is None:
                self._start = time.monotonic()
            if self.fps is not None:
                wait = self._start + self.given / self.fps - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            frame = av.VideoFrame.from_ndarray(self.images[self.given % len(self.images)], format="rgb24")
            frame.pts = self.given * 3000
            frame.time_base = fractions.Fraction(1, 90_000)
            self.given += 1
            return frame
        except asyncio.CancelledError:
            self.recv_cancelled.set()
            raise


class Ends:
    """An ``on_end`` callback that counts its calls and notes the thread it ran on."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: list[threading.Thread] = []
        self.called = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.threads.append(threading.current_thread())
        self.called.set()


MakeSource = Callable[..., tuple[TrackSource, Ends]]


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread("test-track-loop")
    yield lt
    lt.close()


@pytest.fixture
def make_source(loop: LoopThread) -> Iterator[MakeSource]:
    """Build started TrackSources on the test's loop; each is stopped afterwards."""
    made: list[TrackSource] = []

    def make(track: MediaStreamTrack, **config: object) -> tuple[TrackSource, Ends]:
        ends = Ends()
        src = TrackSource(track, TrackConfig(**config), loop=loop.loop, on_end=ends)  # type: ignore[arg-type]
        made.append(src)
        return src.start(), ends

    yield make
    for src in made:
        src.stop()


def test_samples_fps_frames_per_second_of_wall_time(make_source: MakeSource) -> None:
    src, _ = make_source(FakeTrack(fps=40), fps=5.0, size=(64, 48))
    assert src.shown == "webrtc"
    started = time.monotonic()
    frames = numbered(collect(src, 2.0))  # as the hand-over numbers them
    elapsed = time.monotonic() - started
    # ~5 per second: one per 0.2 s target (the first at t=0), a frame every 25 ms comes close to each.
    assert abs(len(frames) - 5 * elapsed) <= 2, (len(frames), elapsed)
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(b.pts > a.pts for a, b in itertools.pairwise(frames))
    gaps = [b.pts - a.pts for a, b in itertools.pairwise(frames)]
    assert all(0.1 < g < 0.35 for g in gaps), gaps  # evenly spaced, not bursts
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.wall_time is not None and abs(f.wall_time - time.time()) < 5 for f in frames)
    st = src.stats
    assert st.state == "live" and st.resolution == SIZE and st.frames_sampled == len(frames) + src.qsize()
    assert st.frames_dropped == 0 and st.last_error is None
    assert st.last_frame_wall is not None and time.time() - st.last_frame_wall < 1


def test_size_none_keeps_the_size_sent(make_source: MakeSource) -> None:
    src, _ = make_source(FakeTrack(count=3, size=(160, 90)), fps=30.0)
    frame = src.get(timeout_s=5)
    assert frame is not None and frame.image.shape == (90, 160, 3)
    assert np.array_equal(frame.image, pattern(0, (160, 90)))
    assert src.stats.resolution == (160, 90)


def test_sampling_is_by_arrival_time_not_frame_timestamps(make_source: MakeSource) -> None:
    """A burst of 40 frames (1.3 s of frame timestamps) that arrives at once is one instant: one frame."""
    src, _ = make_source(FakeTrack(count=40, fps=None), fps=2.0)
    wait_until(lambda: src.stats.resolution is not None, 5, "the burst")
    time.sleep(0.3)
    assert src.stats.frames_sampled == 1
    assert len(collect(src, 0.2)) == 1


def test_watchdog_ends_a_silent_track(make_source: MakeSource) -> None:
    track = FakeTrack(count=6, fps=30)
    src, ends = make_source(track, fps=30.0, watchdog_s=0.5, first_frame_timeout_s=10.0)
    wait_until(lambda: track.given == 6, 5, "six frames")
    assert src.state == "live"
    silent_since = time.monotonic()
    wait_until(lambda: src.state == "ended", 3, "the watchdog")
    took = time.monotonic() - silent_since
    assert 0.3 < took < 1.5, took
    st = src.stats
    assert st.last_error is not None and "watchdog" in st.last_error and "0.5" in st.last_error, st
    assert ends.called.wait(2) and ends.calls == 1
    frames = collect(src, 0.3)
    assert len(frames) == st.frames_sampled >= 1  # queued frames stay readable
    assert src.get(timeout_s=1) is None  # then: over, no waiting
    assert track.recv_cancelled.is_set() or track.given == 6


def test_first_frame_timeout_applies_before_the_first_frame(make_source: MakeSource) -> None:
    src, ends = make_source(FakeTrack(count=0), watchdog_s=10.0, first_frame_timeout_s=0.4)
    started = time.monotonic()
    wait_until(lambda: src.state == "ended", 3, "the first-frame timeout")
    assert time.monotonic() - started < 1.5
    st = src.stats
    assert st.last_error is not None and "no frame came" in st.last_error and "0.4" in st.last_error, st
    assert st.frames_sampled == 0 and st.resolution is None and st.last_frame_wall is None
    assert ends.called.wait(2) and ends.calls == 1
    started = time.monotonic()
    assert src.get() is None and time.monotonic() - started < 0.5


def test_watchdog_is_not_used_before_the_first_frame(make_source: MakeSource) -> None:
    """ICE and DTLS take a moment: before the first frame only first_frame_timeout_s counts."""
    src, ends = make_source(FakeTrack(count=0), watchdog_s=0.2, first_frame_timeout_s=10.0)
    time.sleep(0.8)
    assert src.state == "connecting" and ends.calls == 0
    src.stop()
    assert src.state == "stopped"


def test_peer_leaving_ends_the_source(make_source: MakeSource) -> None:
    src, ends = make_source(FakeTrack(count=5, fps=50, after="leave"), fps=50.0)
    wait_until(lambda: src.state == "ended", 5, "the end")
    assert src.stats.last_error == PEER_LEFT
    assert ends.called.wait(2) and ends.calls == 1
    assert len(collect(src, 0.3)) == src.stats.frames_sampled >= 2
    src.stop()  # stopping an ended source leaves it ended
    assert src.state == "ended" and src.stats.last_error == PEER_LEFT
    time.sleep(0.1)
    assert ends.calls == 1


def test_stop_stops_consuming_and_calls_on_end_once(loop: LoopThread, make_source: MakeSource) -> None:
    track = FakeTrack(fps=30)
    src, ends = make_source(track, fps=10.0)
    wait_until(lambda: src.stats.frames_sampled >= 3, 5, "frames")
    src.stop()
    assert src.state == "stopped"
    assert ends.called.wait(2), "on_end was not called"
    assert ends.threads == [loop._thread], "on_end must run on the connection's loop"
    given = track.given
    time.sleep(0.3)
    assert track.given == given, "the track is still being read after stop()"
    src.stop()
    src.end("too late")  # a connection closing after stop() changes nothing
    time.sleep(0.1)
    assert src.state == "stopped" and src.stats.last_error is None and ends.calls == 1
    assert len(collect(src, 0.3)) == src.stats.frames_sampled  # queued frames stay readable
    started = time.monotonic()
    assert src.get() is None and time.monotonic() - started < 0.5


def test_end_from_another_thread(make_source: MakeSource) -> None:
    """``end`` (the connection failed or closed) stops reading the track at once and calls on_end."""
    track = FakeTrack(fps=30)
    src, ends = make_source(track, fps=10.0)
    wait_until(lambda: src.state == "live", 5, "live")
    src.end("the WebRTC connection failed")
    assert src.state == "ended" and src.stats.last_error == "the WebRTC connection failed"
    assert ends.called.wait(2) and ends.calls == 1
    wait_for(track.recv_cancelled.is_set, 2)
    given = track.given
    time.sleep(0.2)
    assert track.given == given


def test_full_queue_drops_and_counts(make_source: MakeSource) -> None:
    src, _ = make_source(FakeTrack(fps=50), fps=20.0, queue_size=3)
    wait_until(lambda: src.stats.frames_dropped >= 5, 5, "dropped frames")
    st = src.stats
    assert st.frames_sampled == 3 and src.qsize() == 3
    taken = [src.get(timeout_s=1) for _ in range(3)]
    # Room again: the next kept frame continues the sequence, after the drops.
    taken.append(src.get(timeout_s=2))
    assert all(f is not None for f in taken)
    *frames, nxt = numbered([f for f in taken if f is not None])  # as the hand-over numbers them
    assert [f.seq for f in frames if f is not None] == [0, 1, 2]
    assert nxt is not None and nxt.seq == 3
    assert frames[2] is not None and nxt.pts > frames[2].pts + 0.05 * 4  # frames in between were dropped


def test_skip_similar_on_a_static_image(make_source: MakeSource) -> None:
    src, _ = make_source(FakeTrack(fps=50, static=True), fps=20.0, skip_similar=2.0)
    wait_until(lambda: src.stats.frames_skipped_similar >= 5, 5, "skipped frames")
    st = src.stats
    assert st.frames_sampled == 1 and st.frames_dropped == 0
    assert len(collect(src, 0.2)) == 1


def test_skip_similar_keeps_changing_frames(make_source: MakeSource) -> None:
    src, _ = make_source(FakeTrack(fps=50), fps=20.0, skip_similar=2.0)
    frames = collect(src, 0.6)
    assert len(frames) >= 6 and src.stats.frames_skipped_similar == 0


def test_a_consumer_bug_ends_the_source_visibly(make_source: MakeSource) -> None:
    src, ends = make_source(FakeTrack(count=2, fps=50, after="crash"), fps=50.0)
    wait_until(lambda: src.state == "ended", 5, "the end")
    err = src.stats.last_error
    assert err is not None and "internal error" in err and "RuntimeError" in err
    assert ends.called.wait(2) and ends.calls == 1


def test_rejects_audio_tracks_and_bad_configs(loop: LoopThread) -> None:
    audio = FakeTrack()
    audio.kind = "audio"
    with pytest.raises(ValueError, match="video track"):
        TrackSource(audio, loop=loop.loop)
    bad: list[dict[str, Any]] = [
        {"fps": 0},
        {"fps": float("nan")},
        {"watchdog_s": -1},
        {"first_frame_timeout_s": 0},
        {"queue_size": 0},
    ]
    for config in bad:
        with pytest.raises(ValueError):
            TrackConfig(**config)


def test_a_frame_after_the_end_does_not_revive_the_source(loop: LoopThread) -> None:
    """The connection fails (``end``) in the same loop turn as a frame is delivered: ended stays final."""
    ends = Ends()
    src = TrackSource(FakeTrack(count=0), TrackConfig(fps=50), loop=loop.loop, on_end=ends)
    frame = av.VideoFrame.from_ndarray(pattern(1, SIZE), format="rgb24")
    src.end("the WebRTC connection failed")
    src._on_frame(frame)  # what the consumer task does next, had recv() already returned this frame
    assert src.state == "ended" and src.stats.frames_sampled == 0 and src.qsize() == 0
    src.stop()
    assert src.state == "ended"


def test_on_end_runs_when_stopped_before_the_consumer_started(loop: LoopThread) -> None:
    """stop() right after start(), before the task's first step: the connection is still let go."""
    ends = Ends()
    src = TrackSource(FakeTrack(count=None), TrackConfig(fps=50), loop=loop.loop, on_end=ends)
    src.start()
    src.stop()
    assert ends.called.wait(5), "on_end was not called"
    time.sleep(0.2)
    assert ends.calls == 1 and src.state == "stopped"
