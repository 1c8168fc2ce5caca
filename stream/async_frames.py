"""Async iteration over sampled frames: the blocking PyAV decode runs in a worker thread.

One source interface for async callers: ``async for frame in aiter_frames(...)``. A bounded queue
between the decode thread and the event loop gives backpressure: the decoder runs at most
``queue_size`` frames ahead of the consumer. Knows nothing about models, workers or HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Collection, Generator
from dataclasses import dataclass

from stream.frames import Frame
from stream.sampling import Mode, sample_frames
from stream.urls import ALLOWED_SCHEMES, NetworkPolicy

_POLL_S = 0.1
"""How often (seconds) a decode thread blocked on a full queue checks whether the consumer has left."""


@dataclass(frozen=True, slots=True)
class _Done:
    """End of the frames; ``error`` is the exception that ended them, if any."""

    error: BaseException | None = None


def _put(
    queue: asyncio.Queue[Frame | _Done],
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
    item: Frame | _Done,
) -> bool:
    """From the decode thread: put ``item`` on the queue, waiting for room; False if the consumer left."""
    if stop.is_set():
        return False
    try:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
    except RuntimeError:  # the event loop is closed
        return False
    while True:
        try:
            fut.result(timeout=_POLL_S)
            return True
        except concurrent.futures.TimeoutError:
            if stop.is_set():
                fut.cancel()
                return False
        except concurrent.futures.CancelledError:
            return False


def _produce(
    frames: Generator[Frame, None, None],
    queue: asyncio.Queue[Frame | _Done],
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
) -> None:
    """Decode-thread body: pump ``frames`` into ``queue``, then a _Done; always closes ``frames``."""
    try:
        for frame in frames:
            if not _put(queue, loop, stop, frame):
                return
        _put(queue, loop, stop, _Done())
    except BaseException as exc:  # every failure, typed SourceErrors included, goes to the consumer
        _put(queue, loop, stop, _Done(exc))
    finally:
        frames.close()  # closes the container, in the thread that used it


async def aiter_frames(
    src: str,
    *,
    mode: Mode = "fps",
    fps: float = 1.0,
    size: tuple[int, int] | None = None,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    allow_local: bool = False,
    timeout_s: float = 10.0,
    start_seq: int = 0,
    queue_size: int = 8,
    network_policy: NetworkPolicy | None = None,
) -> AsyncIterator[Frame]:
    """Async version of ``sample_frames`` (same arguments, same frames, same errors).

    queue_size: frames decoded ahead of the consumer (>= 1); each is an [H, W, 3] uint8 image in memory.

    Errors raised by the decode (SourceError subclasses) are re-raised here, in the consumer. Closing the
    iterator (``aclose()``, e.g. through ``contextlib.aclosing`` around an ``async for`` that may break,
    or its finalisation by the event loop) tells the decode thread to stop: it does so after its current
    blocking step (at most one read, bounded by ``timeout_s``) and closes the container itself.
    """
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    frames = sample_frames(
        src,
        mode=mode,
        fps=fps,
        size=size,
        allowed_schemes=allowed_schemes,
        allow_local=allow_local,
        timeout_s=timeout_s,
        start_seq=start_seq,
        network_policy=network_policy,
    )
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Frame | _Done] = asyncio.Queue(maxsize=queue_size)
    stop = threading.Event()
    worker = threading.Thread(
        target=_produce, args=(frames, queue, loop, stop), name="vidmem-decode", daemon=True
    )
    worker.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
