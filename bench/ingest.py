"""Pipeline throughput against the raw encoder, side by side in one process.

pipeline: ``sample_frames`` (decode + resize to the backend's image size, 1 fps) -> batches of
``encode_batch`` -> ``FrameStore`` put/get (the Redis hop between ingest and encode workers)
-> ``backend.encode`` -> ``workers.pipeline.thumbnail`` -> ``TokenMemory.append`` (Redis),
i.e. the plain functions behind the ingest and encode tasks, run sequentially.
overlapped: the same, with decoding in a thread (as separate ingest and encode workers overlap).
raw: ``backend.encode`` alone on the same, already decoded frames, same batch size.

Each pipeline batch is timed back to back with a raw encode of the same frames (alternating
which goes first), so that load from other processes on a shared machine hits both alike;
``ingest_ratio`` is the median of the per-batch ratios. The overlapped run is a whole run of
its own (unpaired, so noisier).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Generator
from typing import Any

import numpy as np

from bench.common import Stopwatch, log, median, timed
from model.backend import Backend
from model.memory import MemoryConfig, TokenMemory
from model.slots import EncodedFrame
from stream.frames import Frame
from stream.sampling import sample_frames
from workers.frames import FrameStore
from workers.models import text_costs
from workers.pipeline import thumbnail


class Ingest:
    """Everything one measurement needs; each run writes a fresh stream ``sid``."""

    def __init__(
        self, backend: Backend, memory: TokenMemory, cfg: MemoryConfig, clip: str, frames: int
    ) -> None:
        self.backend, self.memory, self.cfg, self.clip, self.n = backend, memory, cfg, clip, frames
        self.batch = backend.config.max_batch
        self.store = FrameStore(memory.r, ttl_s=600)

    def _batches(self, sw: Stopwatch) -> Generator[list[Frame], None, None]:
        size = (self.backend.info.image_size, self.backend.info.image_size)
        frames = sample_frames(self.clip, mode="fps", fps=1.0, size=size, allow_local=True)
        batch: list[Frame] = []
        try:
            while True:
                with sw("decode"):
                    frame = next(frames, None)
                if frame is None:
                    break
                batch.append(frame)
                if len(batch) == self.batch or frame.seq + 1 == self.n:
                    yield batch
                    batch = []
                if frame.seq + 1 == self.n:
                    break
            if batch:
                yield batch
        finally:
            frames.close()

    def _consume(self, sid: str, batch: list[Frame], sw: Stopwatch) -> None:
        with sw("frame_store"):
            key = self.store.put(sid, batch)
            got = self.store.get(key)
            self.store.delete(key)
        assert got is not None
        with sw("encode"):
            tokens = self.backend.encode(np.stack([f.image for f in got]))
        with sw("thumbnail"):
            thumbs = [thumbnail(f.image) for f in got]
        with sw("append"):
            texts = text_costs(self.backend, self.cfg, [f.pts for f in got])
            encoded = [
                EncodedFrame(seq=f.seq, t=f.pts, tokens=tokens[i], thumb=thumbs[i], text_tokens=texts[i])
                for i, f in enumerate(got)
            ]
            self.memory.append(sid, encoded)

    def _fresh(self, sid: str) -> None:
        self.memory.delete(sid)
        self.memory.create(sid, self.cfg)

    def paired(self, sid: str, images: np.ndarray) -> tuple[list[tuple[float, float]], dict[str, float]]:
        """The sequential pipeline over self.n frames, each batch paired with a raw encode of the
        same (pre-decoded) frames right beside it, alternating which goes first.

        Returns [(pipeline seconds, raw seconds)] per batch and the pipeline's seconds per phase.
        A batch's pipeline time runs from pulling its first frame to the end of its append.
        """
        self._fresh(sid)
        sw = Stopwatch()
        batches = self._batches(sw)
        pairs: list[tuple[float, float]] = []
        try:
            for k in itertools.count():
                chunk = images[k * self.batch : (k + 1) * self.batch]
                raw_first = k % 2 == 1
                raw_s = self._raw_batch(chunk) if raw_first and len(chunk) else 0.0
                start = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                self._consume(sid, batch, sw)
                pipe_s = time.perf_counter() - start
                if not raw_first:
                    raw_s = self._raw_batch(chunk)
                pairs.append((pipe_s, raw_s))
        finally:
            batches.close()
        self._check(sid)
        return pairs, sw.totals

    def overlapped(self, sid: str) -> float:
        """Decode in a thread (a queue of 2 batches), the rest in this thread: seconds for self.n frames."""
        self._fresh(sid)
        q: queue.Queue[list[Frame] | BaseException | None] = queue.Queue(maxsize=2)
        sw = Stopwatch()

        def produce() -> None:
            try:
                for batch in self._batches(Stopwatch()):
                    q.put(batch)
                q.put(None)
            except BaseException as exc:  # handed to the consumer
                q.put(exc)

        def run() -> None:
            worker = threading.Thread(target=produce, name="bench-decode", daemon=True)
            worker.start()
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self._consume(sid, item, sw)
            worker.join()

        _, seconds = timed(run)
        self._check(sid)
        return seconds

    def _check(self, sid: str) -> None:
        got = self.memory.state(sid).next_seq
        if got != self.n:
            raise RuntimeError(f"pipeline stored {got} frames, expected {self.n} (clip too short?)")

    def decoded(self) -> np.ndarray:
        """The same frames the pipeline sees, decoded once: [n, S, S, 3] uint8."""
        return np.stack([f.image for b in self._batches(Stopwatch()) for f in b])

    def _raw_batch(self, images: np.ndarray) -> float:
        return timed(lambda: self.backend.encode(images))[1]

    def raw(self, images: np.ndarray) -> float:
        """backend.encode alone on decoded frames, in the pipeline's batches: seconds."""

        def run() -> None:
            for i in range(0, len(images), self.batch):
                self.backend.encode(images[i : i + self.batch])

        return timed(run)[1]


def measure_ingest(ing: Ingest, repeats: int) -> dict[str, Any]:
    """Paired pipeline / raw batches (``repeats`` passes over the frames) after a warm-up batch,
    then one overlapped run. ``ingest_ratio`` is the median over batches of raw_s / pipeline_s
    (both timed back to back, so load from other processes hits both alike)."""
    images = ing.decoded()
    ing.raw(images[: ing.batch])  # warm-up
    pairs: list[tuple[float, float]] = []
    phases: dict[str, float] = {}
    for r in range(repeats):
        got, sw = ing.paired("bench-ingest", images)
        pairs += got
        for k, v in sw.items():
            phases[k] = phases.get(k, 0.0) + v
        log(f"ingest pass {r + 1}: " + ", ".join(f"pipe {p:.2f} s / raw {w:.2f} s" for p, w in got))
    over_s = ing.overlapped("bench-ingest")
    log(f"ingest overlapped: {over_s:.2f} s")
    ing.memory.delete("bench-ingest")
    n = ing.n * repeats
    pipe_total, raw_total = sum(p for p, _ in pairs), sum(w for _, w in pairs)
    return {
        "ingest_ratio": median([w / p for p, w in pairs]),
        "ingest_ratio_of_totals": raw_total / pipe_total,
        "ingest_ratio_overlapped": (ing.n / over_s) / (n / raw_total),
        "pipeline_frames_per_s": n / pipe_total,
        "pipeline_overlapped_frames_per_s": ing.n / over_s,
        "encoder_frames_per_s": n / raw_total,
        "ingest_frames": ing.n,
        "ingest_batch": ing.batch,
        "ingest_passes": repeats,
        "ingest_pairs": len(pairs),
        "ingest_phase_s": {k: round(v / repeats, 4) for k, v in phases.items()},
    }
