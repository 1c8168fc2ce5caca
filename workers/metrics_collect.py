"""Metric collection: the whole cluster's metrics at scrape time, as a ``prometheus_client`` collector.

``ClusterCollector.collect`` reads the counters and histograms every process recorded into Redis
(``workers.metrics``), so a scrape of any API process covers the whole cluster, and reads the gauges
then: queue lengths in the broker (or the in-process pools), worker heartbeats, and per stream its
memory's tokens and bytes (``TokenMemory.footprints``) and the frames waiting for an encoder
(``FrameStore.waiting``), labelled with stream ids and tenant names only where
``Settings.metrics_stream_labels`` allows (else summed by kind, so that a scrape names no tenant).

``render`` writes them in Prometheus' text format (0.0.4) through a fresh registry. If Redis cannot be
read, it holds only ``vidmem_info`` and ``vidmem_redis_up 0``: the scrape itself still succeeds.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.parser import parse_labels
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from core.redis_values import text
from workers.broker import queue_lengths as broker_queue_lengths
from workers.health import worker_counts
from workers.metrics import RECORDED, Metric
from workers.queues import QUEUES
from workers.runtime import Runtime

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of what ``generate_latest`` writes (the text format 0.0.4), as prometheus_client's
own HTTP handlers label it."""


def render(rt: Runtime) -> bytes:
    """The whole cluster's metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)  # one per scrape: never the process-global one
    registry.register(ClusterCollector(rt))
    return generate_latest(registry)


class ClusterCollector(Collector):
    """Reads everything first, then yields: a scrape never shows half of what Redis held."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Family]:
        s = self.rt.settings
        info = GaugeMetricFamily(
            "vidmem_info", "This API process: its mode and model.", labels=["mode", "model"]
        )
        info.add_metric(["embedded" if s.embedded else "distributed", s.model], 1)
        up = "Whether this API process reaches Redis."
        try:
            families = [*recorded(self.rt.redis), *gauges(self.rt)]
        except redis.RedisError as e:
            log.warning("metrics: Redis unreachable: %s", e)
            yield from (info, GaugeMetricFamily("vidmem_redis_up", up, value=0))
            return
        yield from (info, GaugeMetricFamily("vidmem_redis_up", up, value=1), *families)


# ---- recorded counters and histograms ----------------------------------------------------------------


def recorded(client: redis.Redis) -> list[Family]:
    """The recorded metrics, from their hashes: one pipelined round trip."""
    with client.pipeline(transaction=False) as p:
        for m in RECORDED:
            p.hgetall(m.key)
        raw = p.execute()
    out: list[Family] = []
    for m, fields_raw in zip(RECORDED, raw, strict=True):
        fields = {text(k): float(text(v)) for k, v in fields_raw.items()}
        out.append(_counter(m, fields) if m.type == "counter" else _histogram(m, fields))
    return out


def _values(m: Metric, labels: str) -> list[str] | None:
    """A stored label string's values, in the order of the metric's label names; None (logged) for one
    that does not carry exactly those names (written by another version): the rest of the scrape stands."""
    parsed = parse_labels(labels)
    if set(parsed) != set(m.labels):
        log.warning("metrics: %s has a series with labels %r, not %s; left out", m.name, labels, m.labels)
        return None
    return [parsed[name] for name in m.labels]


def _counter(m: Metric, fields: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(m.name, m.help, labels=m.labels)  # it adds "_total" to the samples
    for labels, v in sorted(fields.items()):
        if (values := _values(m, labels)) is not None:
            family.add_metric(values, v)
    return family


def _histogram(m: Metric, fields: Mapping[str, float]) -> HistogramMetricFamily:
    """Fields ``<labels>|<i>`` (bucket ``i`` alone; the last is +Inf) and ``<labels>|sum``."""
    series: dict[str, dict[str, float]] = {}
    for f, v in fields.items():
        labels, _, part = f.rpartition("|")
        series.setdefault(labels, {})[part] = v
    bounds = [*(floatToGoString(b) for b in m.buckets), "+Inf"]
    family = HistogramMetricFamily(m.name, m.help, labels=m.labels)
    for labels in sorted(series):
        if (values := _values(m, labels)) is None:
            continue
        parts = series[labels]
        cumulative = itertools.accumulate(parts.get(str(i), 0.0) for i in range(len(bounds)))
        family.add_metric(values, list(zip(bounds, cumulative, strict=True)), parts.get("sum", 0.0))
    return family


# ---- gauges read at scrape time ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamUsage:
    stream_id: str
    tenant: str
    kind: str
    tokens: int
    memory_bytes: int
    frames_waiting: int


def stream_usage(rt: Runtime, stream_ids: Sequence[str]) -> list[StreamUsage]:
    """Per stream: its kind and tenant (a stream deleted while listed is left out), the prompt tokens
    and bytes its memory holds (``TokenMemory.footprints``), and its frames waiting for an encoder."""
    listed = rt.records.kinds_and_tenants(stream_ids)
    ids = list(listed)
    footprints = rt.memory.footprints(ids)
    waiting = rt.frames.waiting(ids)
    return [
        StreamUsage(
            stream_id=sid,
            tenant=tenant,
            kind=kind,
            tokens=footprints[sid].tokens,
            memory_bytes=footprints[sid].memory_bytes,
            frames_waiting=waiting[sid],
        )
        for sid, (kind, tenant) in listed.items()
    ]


@dataclass(frozen=True, slots=True)
class StreamSeries:
    """The listed streams' usage under their labels: per stream (``stream_id``, ``tenant``, ``kind``),
    or, where stream ids and tenant names must not be shown, summed by ``kind``."""

    usage: Sequence[StreamUsage]
    per_stream: bool

    def gauge(self, name: str, help: str, value: Callable[[StreamUsage], float]) -> GaugeMetricFamily:
        sums: dict[tuple[str, ...], float] = {}
        names = ("stream_id", "tenant", "kind") if self.per_stream else ("kind",)
        for u in self.usage:
            key = tuple(getattr(u, n) for n in names)
            sums[key] = sums.get(key, 0) + value(u)
        help += "." if self.per_stream else ", summed by kind (metrics_per_stream is off)."
        family = GaugeMetricFamily(name, help, labels=names)
        for key, v in sums.items():
            family.add_metric(list(key), v)
        return family


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


def _labelled(name: str, help: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help, labels=[label])
    for k, v in values.items():
        family.add_metric([k], v)
    return family


def gauges(rt: Runtime) -> list[Family]:
    """The gauges, in the order of the exposition: the broker, queues, workers, streams and their usage."""
    cap = rt.settings.metrics_max_streams
    ids = rt.records.stream_ids()  # oldest first
    usage = stream_usage(rt, list(reversed(ids[-cap:])) if cap else [])
    workers = worker_counts(rt)
    queues = queue_lengths(rt)
    per_stream = StreamSeries(usage, rt.settings.metrics_stream_labels)
    return [
        GaugeMetricFamily("vidmem_broker_up", "Whether the Celery broker answered (1 in embedded mode).",
                          value=int(queues is not None)),
        _labelled("vidmem_queue_length", "Tasks waiting in a queue: the broker's list (embedded mode: the "
                  "in-process pool's backlog).", "queue", queues or {}),
        _labelled("vidmem_workers", "Live workers per queue, from heartbeats (queue=live_readers: processes "
                  "reading live cameras).", "queue", workers),
        GaugeMetricFamily("vidmem_streams", "Streams on record (every tenant).", value=len(ids)),
        GaugeMetricFamily("vidmem_frames_waiting", "Frames handed over but not yet encoded, over the listed "
                          "streams.", value=sum(u.frames_waiting for u in usage)),
        per_stream.gauge("vidmem_stream_tokens", "Prompt tokens a stream's memory holds (visual + "
                         "timestamp text)", lambda u: u.tokens),
        per_stream.gauge("vidmem_stream_memory_bytes", "Bytes of a stream's token grids and thumbnails in "
                         "Redis", lambda u: u.memory_bytes),
        per_stream.gauge("vidmem_stream_frames_waiting", "A stream's frames handed over but not yet "
                         "encoded", lambda u: u.frames_waiting),
    ]  # fmt: skip
