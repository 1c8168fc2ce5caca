"""The consumer side shared by live sources: a bounded frame queue plus a locked LiveStats snapshot.

A producer (a decode thread, or an event-loop task) calls ``_offer`` for each kept frame (a full queue
drops it and counts it) and ``_count`` / ``_update`` for its counters; ``_finish`` says no frame will
come any more. Consumers, in any thread, read ``stats``, ``state``, ``qsize`` and ``get``.

Standard library only (and ``RawFrame``); knows nothing about PyAV, aiortc or consumers.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

from stream.frames import RawFrame
from stream.live_types import LiveState, LiveStats

_POLL_S = 0.1
"""How often (seconds) a waiting consumer checks whether the source has finished."""


class QueuedFeed:
    """Frames queued for one consumer (at most ``queue_size``), and the counters of their source."""

    def __init__(self, queue_size: int) -> None:
        self._queue: queue.Queue[RawFrame] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stats = LiveStats()
        self._done = threading.Event()

    @property
    def stats(self) -> LiveStats:
        """A consistent snapshot of the counters, gaps and state."""
        with self._lock:
            return self._stats

    @property
    def state(self) -> LiveState:
        return self.stats.state

    def qsize(self) -> int:
        """Frames waiting for the consumer (at most the queue size)."""
        return self._queue.qsize()

    def get(self, timeout_s: float | None = None) -> RawFrame | None:
        """The next frame, waiting at most ``timeout_s`` (None: until one comes or the source finishes);
        None on timeout, or once the source has finished and the queue is empty."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = _POLL_S if deadline is None else min(_POLL_S, max(0.0, deadline - time.monotonic()))
            try:
                return self._queue.get(timeout=wait)
            except queue.Empty:
                if self._done.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    return None

    # ---- producer side ----

    def _offer(self, frame: RawFrame) -> bool:
        """Queue a kept frame and count it as sampled; when the queue is full, count it as dropped."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self._count(frames_dropped=1)
            return False
        self._count(frames_sampled=1)
        return True

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._stats = dataclasses.replace(self._stats, **changes)  # type: ignore[arg-type]

    def _count(self, **increments: int) -> None:
        with self._lock:
            changes = {k: getattr(self._stats, k) + v for k, v in increments.items()}
            self._stats = dataclasses.replace(self._stats, **changes)

    def _finish(self) -> None:
        """No frame will be queued any more: waiting consumers return once the queue is empty."""
        self._done.set()
