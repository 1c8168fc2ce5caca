"""Metric recording: every process records counters and histograms into Redis, where any API process
collects them for Prometheus (``workers.metrics_collect``), so one scrape covers the whole cluster.

Counters and histograms are *recorded* where things happen (ingest and encode tasks, answer tasks, live
readers), in any process, into one Redis hash per metric (``vm:metrics:<name>``), one pipelined round
trip per event (``record``). Recording is best effort against Redis: a Redis error is logged and the
event is lost (the work it describes goes on); any other error is a bug and raises.

Storage: a counter's field is its label string (``kind="upload"``, the text format's form); a
histogram's fields are ``<labels>|<i>`` (observations in bucket ``i``, not cumulative; the last is +Inf)
and ``<labels>|sum``.

A leaf: it knows nothing of HTTP, models, the runtime or how the metrics are exposed.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import redis

from core.redis_values import PREFIX as KEY_PREFIX

log = logging.getLogger(__name__)

PREFIX = f"{KEY_PREFIX}:metrics:"

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class Metric:
    """A recorded metric. ``labels``: the label names every event of it carries; ``buckets``: a
    histogram's upper bounds in seconds (+Inf is implied)."""

    name: str
    type: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return PREFIX + self.name


FRAMES_SAMPLED = Metric(
    "vidmem_frames_sampled_total",
    "counter",
    "Frames sampled and handed to the encoders, by stream kind.",
    ("kind",),
)
FRAMES_ENCODED = Metric(
    "vidmem_frames_encoded_total", "counter", "Frames encoded into a memory, by stream kind.", ("kind",)
)
FRAMES_DROPPED = Metric(
    "vidmem_frames_dropped_total",
    "counter",
    "Live frames dropped because the reader's queue was full (encoders behind), by stream kind.",
    ("kind",),
)
FRAMES_SKIPPED = Metric(
    "vidmem_frames_skipped_total",
    "counter",
    "Live frames not kept: near-identical (reason=similar) or HLS replays (reason=replayed).",
    ("kind", "reason"),
)
ENCODE_SECONDS = Metric(
    "vidmem_encode_batch_seconds",
    "histogram",
    "Time of one encode batch: vision tower + projector + pooling.",
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Metric("vidmem_answers_total", "counter", "Answers by result: ok, or the error code.", ("result",))
ANSWER_TTFT_SECONDS = Metric(
    "vidmem_answer_ttft_seconds", "histogram", "Time to an answer's first token.", buckets=ANSWER_BUCKETS
)
ANSWER_SECONDS = Metric(
    "vidmem_answer_seconds", "histogram", "Total time of an answer.", buckets=ANSWER_BUCKETS
)
LIVE_RECONNECTS = Metric(
    "vidmem_live_reconnects_total",
    "counter",
    "Times a live source came back after losing its feed.",
    ("kind",),
)
LIVE_ENDS = Metric(
    "vidmem_live_ends_total",
    "counter",
    "Live feeds that ended for good (WebRTC tracks), by reason: watchdog (no frames) or peer.",
    ("kind", "reason"),
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


@dataclass(frozen=True, slots=True)
class Event:
    metric: Metric
    value: float
    labels: str  # exposition form, e.g. 'kind="live"'


def labels_text(labels: Mapping[str, object]) -> str:
    """``{"kind": "live"}`` -> ``kind="live"`` (sorted, values escaped as the text format requires): the
    field a series is stored under, which ``prometheus_client.parser.parse_labels`` reads back."""
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _event(metric: Metric, kind: str, value: float, labels: Mapping[str, object]) -> Event:
    if metric.type != kind:
        raise ValueError(f"{metric.name} is a {metric.type}, not a {kind}")
    if set(labels) != set(metric.labels):
        raise ValueError(f"{metric.name} takes the labels {list(metric.labels)}, not {sorted(labels)}")
    return Event(metric, value, labels_text(labels))


def inc(metric: Metric, n: float = 1, **labels: object) -> Event:
    return _event(metric, "counter", n, labels)


def observe(metric: Metric, value: float, **labels: object) -> Event:
    return _event(metric, "histogram", value, labels)


def record(client: redis.Redis, *events: Event) -> None:
    """Add the events in one round trip. A Redis error is logged and the events are lost (metrics are
    best effort; the work they describe is not)."""
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
    except redis.RedisError as exc:
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
