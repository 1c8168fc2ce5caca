"""Cluster-wide metrics: every process records events into Redis; the API renders them for Prometheus.

Counters and histograms are *recorded* where things happen (ingest and encode tasks, answer tasks, live
readers), in any process, into one Redis hash per metric (``vm:metrics:<name>``), one pipelined round
trip per event (``record``). So a scrape of any API process covers the whole cluster. Recording never
raises: metrics are best effort, the work is not, so a Redis error is logged and the event is lost.

Gauges are *read* at scrape time (``render``): queue lengths in the broker (or the in-process pools),
worker heartbeats, and per stream its memory's tokens and bytes and the frames waiting for an encoder
(labelled with stream ids and tenant names only where ``Settings.metrics_stream_labels`` allows; else
summed by kind, so that a scrape names no tenant).

Storage: a counter's field is its label string (``kind="upload"``); a histogram's fields are
``<labels>|<i>`` (observations in bucket ``i``, not cumulative; the last is +Inf) and ``<labels>|sum``.

Knows nothing about HTTP or models.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import redis

from model.compressor import layout_cost
from model.memory import SlotInfo
from workers.broker import queue_lengths as broker_queue_lengths
from workers.frames import FrameStore
from workers.health import worker_counts
from workers.queues import QUEUES
from workers.runtime import Runtime

log = logging.getLogger(__name__)

PREFIX = "vm:metrics:"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class Metric:
    """A recorded metric. ``buckets``: a histogram's upper bounds in seconds (+Inf is implied)."""

    name: str
    type: Literal["counter", "histogram"]
    help: str
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return PREFIX + self.name


FRAMES_SAMPLED = Metric(
    "vidmem_frames_sampled_total", "counter", "Frames sampled and handed to the encoders, by stream kind."
)
FRAMES_ENCODED = Metric(
    "vidmem_frames_encoded_total", "counter", "Frames encoded into a memory, by stream kind."
)
FRAMES_DROPPED = Metric(
    "vidmem_frames_dropped_total",
    "counter",
    "Live frames dropped because the reader's queue was full (encoders behind), by stream kind.",
)
FRAMES_SKIPPED = Metric(
    "vidmem_frames_skipped_total",
    "counter",
    "Live frames not kept: near-identical (reason=similar) or HLS replays (reason=replayed).",
)
ENCODE_SECONDS = Metric(
    "vidmem_encode_batch_seconds",
    "histogram",
    "Time of one encode batch: vision tower + projector + pooling.",
    LATENCY_BUCKETS,
)
ANSWERS = Metric("vidmem_answers_total", "counter", "Answers by result: ok, or the error code.")
ANSWER_TTFT_SECONDS = Metric(
    "vidmem_answer_ttft_seconds", "histogram", "Time to an answer's first token.", ANSWER_BUCKETS
)
ANSWER_SECONDS = Metric("vidmem_answer_seconds", "histogram", "Total time of an answer.", ANSWER_BUCKETS)
LIVE_RECONNECTS = Metric(
    "vidmem_live_reconnects_total", "counter", "Times a live source came back after losing its feed."
)
LIVE_ENDS = Metric(
    "vidmem_live_ends_total",
    "counter",
    "Live feeds that ended for good (WebRTC tracks), by reason: watchdog (no frames) or peer.",
)

RECORDED = (
    FRAMES_SAMPLED,
    FRAMES_ENCODED,
    FRAMES_DROPPED,
    FRAMES_SKIPPED,
    ENCODE_SECONDS,
    ANSWERS,
    ANSWER_TTFT_SECONDS,
    ANSWER_SECONDS,
    LIVE_RECONNECTS,
    LIVE_ENDS,
)


# ---- recording -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    metric: Metric
    value: float
    labels: str  # exposition form, e.g. 'kind="live"'


def labels_text(labels: Mapping[str, object]) -> str:
    """``{"kind": "live"}`` -> ``kind="live"`` (sorted, values escaped as the text format requires)."""
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def inc(metric: Metric, n: float = 1, **labels: object) -> Event:
    if metric.type != "counter":
        raise ValueError(f"{metric.name} is a {metric.type}, not a counter")
    return Event(metric, n, labels_text(labels))


def observe(metric: Metric, value: float, **labels: object) -> Event:
    if metric.type != "histogram":
        raise ValueError(f"{metric.name} is a {metric.type}, not a histogram")
    return Event(metric, value, labels_text(labels))


def record(client: redis.Redis, *events: Event) -> None:
    """Add the events in one round trip. Never raises: a failure is logged and the events are lost."""
    events = tuple(e for e in events if e.value or e.metric.type == "histogram")
    if not events:
        return
    try:
        with client.pipeline(transaction=False) as p:
            for e in events:
                if e.metric.type == "counter":
                    if float(e.value).is_integer():
                        p.hincrby(e.metric.key, e.labels, int(e.value))
                    else:
                        p.hincrbyfloat(e.metric.key, e.labels, e.value)
                else:
                    i = bisect.bisect_left(e.metric.buckets, e.value)  # first bound >= value; len: +Inf
                    p.hincrby(e.metric.key, f"{e.labels}|{i}", 1)
                    p.hincrbyfloat(e.metric.key, f"{e.labels}|sum", e.value)
            p.execute()
    except Exception as exc:  # metrics must never break the work they describe
        log.warning("metrics not recorded (%s): %s", ", ".join(e.metric.name for e in events), exc)


def live_counts(kind: str, increments: Mapping[str, int]) -> list[Event]:
    """A live reader's counter increments (``LiveRecords.report``'s names) as metric events."""
    return [
        inc(FRAMES_DROPPED, increments.get("frames_dropped", 0), kind=kind),
        inc(FRAMES_SKIPPED, increments.get("frames_skipped", 0), kind=kind, reason="similar"),
        inc(FRAMES_SKIPPED, increments.get("frames_replayed", 0), kind=kind, reason="replayed"),
        inc(LIVE_RECONNECTS, increments.get("reconnects", 0), kind=kind),
    ]


def feed_ended(kind: str, last_error: str | None) -> Event:
    """A feed that cannot be reopened ended: by its watchdog (``stream.webrtc`` says "(watchdog)"), or not."""
    reason = "watchdog" if last_error and "(watchdog)" in last_error else "peer"
    return inc(LIVE_ENDS, kind=kind, reason=reason)


# ---- exposition ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as exposed: samples are (name suffix, label text, value)."""

    name: str
    type: str
    help: str
    samples: Sequence[tuple[str, str, float]]

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help.replace(chr(92), chr(92) * 2)}"  # escape backslashes
        yield f"# TYPE {self.name} {self.type}"
        for suffix, labels, value in self.samples:
            series = f"{self.name}{suffix}{{{labels}}}" if labels else f"{self.name}{suffix}"
            yield f"{series} {_number(value)}"


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def gauge(name: str, help: str, samples: Iterable[tuple[Mapping[str, object], float]]) -> Family:
    return Family(name, "gauge", help, [("", labels_text(lab), v) for lab, v in samples])


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def recorded_families(raw: Mapping[Metric, Mapping[Any, Any]]) -> list[Family]:
    """The recorded metrics from their hashes (as HGETALL returns them)."""
    out = []
    for m in RECORDED:
        fields = {_s(k): float(_s(v)) for k, v in raw.get(m, {}).items()}
        if m.type == "counter":
            out.append(Family(m.name, "counter", m.help, [("", k, v) for k, v in sorted(fields.items())]))
        else:
            out.append(Family(m.name, "histogram", m.help, _histogram(m, fields)))
    return out


def _histogram(m: Metric, fields: Mapping[str, float]) -> list[tuple[str, str, float]]:
    series: dict[str, dict[str, float]] = {}
    for f, v in fields.items():
        labels, _, part = f.rpartition("|")
        series.setdefault(labels, {})[part] = v
    samples: list[tuple[str, str, float]] = []
    bounds = [*(repr(float(b)) for b in m.buckets), "+Inf"]
    for labels in sorted(series):
        parts = series[labels]
        total = 0.0
        for i, le in enumerate(bounds):
            total += parts.get(str(i), 0.0)
            samples.append(("_bucket", ",".join(x for x in (labels, f'le="{le}"') if x), total))
        samples.append(("_sum", labels, parts.get("sum", 0.0)))
        samples.append(("_count", labels, total))
    return samples


def exposition(families: Iterable[Family]) -> str:
    return "".join(line + "\n" for f in families for line in f.lines())


# ---- scrape ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamUsage:
    stream_id: str
    tenant: str
    kind: str
    tokens: int
    memory_bytes: int
    frames_waiting: int


def stream_usage(rt: Runtime, stream_ids: Sequence[str]) -> list[StreamUsage]:
    """Per stream: prompt tokens its memory holds (``layout_cost``, as answers count them), the bytes its
    token grids and thumbnails take in Redis (grids computed from their sides; thumbnails by STRLEN;
    frames in flight not included), and frames waiting for an encoder. Three pipelined round trips."""
    r = rt.redis
    with r.pipeline(transaction=False) as p:
        for sid in stream_ids:
            p.hmget(rt.records.stream_key(sid), ["kind", "tenant"])
            p.hmget(rt.memory.key(sid, "meta"), ["dim", "dtype"])
            p.hgetall(rt.memory.key(sid, "slots"))
            p.zrange(rt.frames.inflight_key(sid), 0, -1)
        got = p.execute()
    rows = []
    with r.pipeline(transaction=False) as p:
        for i, sid in enumerate(stream_ids):
            (kind, tenant), (dim, dtype), slots_raw, inflight = got[4 * i : 4 * i + 4]
            if kind is None:  # deleted while we listed
                continue
            slots = [SlotInfo.from_json(int(k), v) for k, v in slots_raw.items()]
            for s in slots:
                p.strlen(rt.memory.key(sid, f"thumb:{s.slot_id}"))
            width = int(dim) * np.dtype(_s(dtype)).itemsize if dim is not None and dtype is not None else 0
            rows.append(
                (
                    StreamUsage(
                        stream_id=sid,
                        tenant=_s(tenant) if tenant is not None else "local",
                        kind=_s(kind),
                        tokens=layout_cost([s.side for s in slots], [s.text for s in slots]),
                        memory_bytes=sum(s.side * s.side for s in slots) * width,
                        frames_waiting=sum(len(FrameStore.seqs(_s(k))) for k in inflight),
                    ),
                    len(slots),
                )
            )
        thumbs = p.execute()
    out, pos = [], 0
    for usage, n in rows:
        thumb_bytes = sum(int(x or 0) for x in thumbs[pos : pos + n])
        pos += n
        out.append(dataclasses.replace(usage, memory_bytes=usage.memory_bytes + thumb_bytes))
    return out


@dataclass(frozen=True, slots=True)
class StreamSeries:
    """The listed streams' usage under their labels: per stream (``stream_id``, ``tenant``, ``kind``),
    or, where stream ids and tenant names must not be shown, summed by ``kind``."""

    usage: Sequence[StreamUsage]
    per_stream: bool

    @property
    def help(self) -> str:
        return "." if self.per_stream else ", summed by kind (metrics_per_stream is off)."

    def samples(self, value: Callable[[StreamUsage], float]) -> list[tuple[Mapping[str, object], float]]:
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for u in self.usage:
            labels = (("stream_id", u.stream_id), ("tenant", u.tenant), ("kind", u.kind))
            key = labels if self.per_stream else labels[2:]
            sums[key] = sums.get(key, 0) + value(u)
        return [(dict(k), v) for k, v in sums.items()]


def queue_lengths(rt: Runtime) -> dict[str, int] | None:
    """Tasks waiting per queue: in the broker (distributed), or in the in-process pools (embedded: work
    submitted and not started). None if the broker cannot be read."""
    if not rt.settings.embedded:
        return broker_queue_lengths(rt.settings)
    pools = getattr(rt.dispatcher, "pools", {})
    out = {}
    for q in QUEUES:
        work = getattr(pools.get(q), "_work_queue", None)  # ThreadPoolExecutor's queue of pending work
        out[q] = work.qsize() if work is not None else 0
    return out


def render(rt: Runtime) -> str:
    """The whole cluster's metrics in Prometheus' text format (0.0.4). If Redis cannot be read, only
    ``vidmem_info`` and ``vidmem_redis_up 0`` (the scrape itself still succeeds)."""
    mode = "embedded" if rt.settings.embedded else "distributed"
    families = [gauge("vidmem_info", "This API process: its mode and model.",
                      [({"mode": mode, "model": rt.settings.model}, 1)])]  # fmt: skip
    up = "Whether this API process reaches Redis."
    try:
        recorded, gauges = _read(rt)
    except redis.RedisError as e:
        log.warning("metrics: Redis unreachable: %s", e)
        return exposition([*families, gauge("vidmem_redis_up", up, [({}, 0)])])
    return exposition([*families, gauge("vidmem_redis_up", up, [({}, 1)]), *recorded, *gauges])


def _read(rt: Runtime) -> tuple[list[Family], list[Family]]:
    with rt.redis.pipeline(transaction=False) as p:
        for m in RECORDED:
            p.hgetall(m.key)
        raw = dict(zip(RECORDED, p.execute(), strict=True))
    cap = rt.settings.metrics_max_streams
    ids = rt.records.stream_ids()  # oldest first
    usage = stream_usage(rt, list(reversed(ids[-cap:])) if cap else [])
    workers = worker_counts(rt)
    queues = queue_lengths(rt)
    per_stream = StreamSeries(usage, rt.settings.metrics_stream_labels)
    gauges = [
        gauge("vidmem_broker_up", "Whether the Celery broker answered (1 in embedded mode).",
              [({}, queues is not None)]),
        gauge("vidmem_queue_length", "Tasks waiting in a queue: the broker's list (embedded mode: the "
              "in-process pool's backlog).", [({"queue": q}, n) for q, n in (queues or {}).items()]),
        gauge("vidmem_workers", "Live workers per queue, from heartbeats (queue=live_readers: processes "
              "reading live cameras).", [({"queue": q}, n) for q, n in workers.items()]),
        gauge("vidmem_streams", "Streams on record (every tenant).", [({}, len(ids))]),
        gauge("vidmem_frames_waiting", "Frames handed over but not yet encoded, over the listed streams.",
              [({}, sum(u.frames_waiting for u in usage))]),
        gauge("vidmem_stream_tokens", "Prompt tokens a stream's memory holds (visual + timestamp text)"
              + per_stream.help, per_stream.samples(lambda u: u.tokens)),
        gauge("vidmem_stream_memory_bytes", "Bytes of a stream's token grids and thumbnails in Redis"
              + per_stream.help, per_stream.samples(lambda u: u.memory_bytes)),
        gauge("vidmem_stream_frames_waiting", "A stream's frames handed over but not yet encoded"
              + per_stream.help, per_stream.samples(lambda u: u.frames_waiting)),
    ]  # fmt: skip
    return recorded_families(raw), gauges
