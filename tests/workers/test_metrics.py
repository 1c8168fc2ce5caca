"""Metrics recorded into Redis (fakeredis) and collected in Prometheus' text format: counters, cumulative
histograms, label escaping, recording that does not raise when Redis is down, per-stream tokens and bytes,
live readers' counters, and worker heartbeats."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client.metrics_core import GaugeMetricFamily

from core.settings import Settings
from model.memory import Footprint, MemoryConfig
from model.slots import EncodedFrame
from stream.feed import QueuedFeed
from stream.frames import Frame, RawFrame
from tests.prometheus import expose, parse
from workers import health, metrics, metrics_collect, service
from workers.broker import quick_redis
from workers.live import LiveSupervisor
from workers.runtime import Runtime
from workers.tenants import LOCAL_TENANT


def _exposed(client: redis.Redis) -> dict[str, Any]:
    return parse(expose(metrics_collect.recorded(client)))


def test_counters_add_up_per_label_set(fake_redis: redis.Redis) -> None:
    metrics.record(fake_redis, metrics.inc(metrics.FRAMES_ENCODED, 8, kind="upload"))
    metrics.record(fake_redis, metrics.inc(metrics.FRAMES_ENCODED, 4, kind="upload"))
    metrics.record(fake_redis, metrics.inc(metrics.FRAMES_ENCODED, 3, kind="live"))
    metrics.record(fake_redis, metrics.inc(metrics.FRAMES_ENCODED, 0, kind="webrtc"))  # nothing to add
    fam = _exposed(fake_redis)["vidmem_frames_encoded_total"]
    assert fam.type == "counter" and fam.help
    assert fam.series() == {frozenset({("kind", "upload")}): 12, frozenset({("kind", "live")}): 3}


def test_a_stored_series_with_other_label_names_is_left_out_not_fatal(fake_redis: redis.Redis) -> None:
    metrics.record(fake_redis, metrics.inc(metrics.FRAMES_ENCODED, 2, kind="upload"))
    fake_redis.hset(metrics.FRAMES_ENCODED.key, 'camera="x"', 5)  # written by another version
    fake_redis.hset(metrics.ENCODE_SECONDS.key, mapping={'camera="x"|0': 1, 'camera="x"|sum': 0.001})
    fams = _exposed(fake_redis)
    assert fams["vidmem_frames_encoded_total"].series() == {frozenset({("kind", "upload")}): 2}
    assert "vidmem_encode_batch_seconds" in fams


def test_histograms_are_cumulative_with_sum_and_count(fake_redis: redis.Redis) -> None:
    for v in (0.003, 0.01, 0.2, 0.2, 7.0, 1000.0):  # 0.01 falls in le="0.01" (bounds are inclusive)
        metrics.record(fake_redis, metrics.observe(metrics.ENCODE_SECONDS, v))
    fam = _exposed(fake_redis)["vidmem_encode_batch_seconds"]
    assert fam.type == "histogram"
    assert fam.value("_count") == 6
    assert fam.value("_sum") == pytest.approx(1007.413)
    assert fam.value("_bucket", le="0.01") == 2
    assert fam.value("_bucket", le="0.25") == 4
    assert fam.value("_bucket", le="10.0") == 5
    assert fam.value("_bucket", le="60.0") == 5
    assert fam.value("_bucket", le="+Inf") == 6


def test_one_event_is_one_round_trip(fake_redis: redis.Redis) -> None:
    calls = []
    pipeline = fake_redis.pipeline
    fake_redis.pipeline = lambda *a, **k: calls.append(1) or pipeline(*a, **k)  # type: ignore[method-assign]
    metrics.record(
        fake_redis,
        metrics.inc(metrics.FRAMES_ENCODED, 8, kind="upload"),
        metrics.observe(metrics.ENCODE_SECONDS, 0.3),
    )
    assert calls == [1]
    assert fake_redis.hgetall(metrics.FRAMES_ENCODED.key) == {b'kind="upload"': b"8"}


def test_label_values_are_escaped_and_read_back() -> None:
    odd = 'a "quoted"\\ name\nnext'
    gauge = GaugeMetricFamily("vidmem_x", "A gauge.", labels=["name"])
    gauge.add_metric([odd], 2.5)
    text = expose([gauge])
    assert text.splitlines()[-1] == 'vidmem_x{name="a \\"quoted\\"\\\\ name\\nnext"} 2.5'
    assert parse(text)["vidmem_x"].value(name=odd) == 2.5


def test_recorded_label_values_are_read_back(fake_redis: redis.Redis) -> None:
    odd = 'a "quoted"\\ name\nnext, with="signs"|1'
    metrics.record(fake_redis, metrics.inc(metrics.ANSWERS, result=odd))
    metrics.record(fake_redis, metrics.observe(metrics.ENCODE_SECONDS, 0.3))
    fams = _exposed(fake_redis)
    assert fams["vidmem_answers_total"].value(result=odd) == 1
    assert fams["vidmem_encode_batch_seconds"].value("_bucket", le="0.5") == 1


def test_a_counter_is_not_observed_nor_a_histogram_counted() -> None:
    with pytest.raises(ValueError, match="not a histogram"):
        metrics.observe(metrics.FRAMES_ENCODED, 1.0)
    with pytest.raises(ValueError, match="not a counter"):
        metrics.inc(metrics.ENCODE_SECONDS)


def test_an_event_carries_its_metrics_labels() -> None:
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.inc(metrics.FRAMES_ENCODED, 1)
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.inc(metrics.FRAMES_SKIPPED, 1, kind="live")
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.observe(metrics.ENCODE_SECONDS, 0.1, kind="live")


def test_recording_does_not_raise_when_redis_is_down(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    down = quick_redis(f"redis://127.0.0.1:{closed_port}", 0.2)
    with caplog.at_level(logging.WARNING, logger="workers.metrics"):
        t0 = time.monotonic()
        metrics.record(down, metrics.inc(metrics.FRAMES_SAMPLED, 4, kind="live"))
    assert time.monotonic() - t0 < 2
    assert "metrics not recorded (vidmem_frames_sampled_total)" in caplog.text


def test_recording_lets_a_bug_surface(fake_redis: redis.Redis) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, not Redis")

    fake_redis.pipeline = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug"):
        metrics.record(fake_redis, metrics.inc(metrics.FRAMES_SAMPLED, 4, kind="live"))


def test_live_counters_and_how_a_feed_ended() -> None:
    events = metrics.live_counts("live", {"frames_dropped": 3, "frames_replayed": 2, "reconnects": 1})
    got = {(e.metric.name, e.labels): e.value for e in events if e.value}
    assert got == {
        ("vidmem_frames_dropped_total", 'kind="live"'): 3,
        ("vidmem_frames_skipped_total", 'kind="live",reason="replayed"'): 2,
        ("vidmem_live_reconnects_total", 'kind="live"'): 1,
    }
    assert (
        metrics.feed_ended("webrtc", "no frame for 10 s (watchdog)").labels
        == 'kind="webrtc",reason="watchdog"'
    )
    assert metrics.feed_ended("webrtc", "the browser closed the connection").labels.endswith('reason="peer"')


# ---- gauges read at scrape time --------------------------------------------------------------------------


def _runtime(fake_redis: redis.Redis, **settings: Any) -> Runtime:
    return Runtime.create(Settings(redis_url=None, **settings), client=fake_redis)


def test_stream_tokens_and_bytes_match_the_memory(fake_redis: redis.Redis) -> None:
    rt = _runtime(fake_redis)
    sid = service.create_webrtc_stream(rt, "acme", budget=64)
    cfg = MemoryConfig(budget=64, s_max=4, dim=8, text_tokens=2, dtype="float16")
    rt.memory.create(sid, cfg)
    rng = np.random.default_rng(0)
    frames = [
        EncodedFrame(seq=i, t=float(i), tokens=rng.standard_normal((4, 4, 8)).astype(np.float32),
                     thumb=b"j" * (100 + i), text_tokens=2)
        for i in range(10)
    ]  # fmt: skip
    rt.memory.append(sid, frames)
    rt.frames.put(sid, [Frame(seq=10 + i, pts=0.0, image=np.zeros((2, 2, 3), np.uint8)) for i in range(3)])

    [u] = metrics_collect.stream_usage(rt, [sid])
    state = rt.memory.state(sid)
    assert (u.stream_id, u.tenant, u.kind) == (sid, "acme", "webrtc")
    assert u.tokens == state.tokens_used > 0
    tok = sum(fake_redis.strlen(rt.memory.key(sid, f"tok:{s.slot_id}")) for s in state.slots)
    thumbs = sum(fake_redis.strlen(rt.memory.key(sid, f"thumb:{s.slot_id}")) for s in state.slots)
    assert u.memory_bytes == tok + thumbs
    assert u.frames_waiting == 3
    assert metrics_collect.stream_usage(rt, ["gone"]) == []  # a stream deleted while listed is left out
    # what the collection reads through the stores, for a stream without a memory or frames in flight
    other = service.create_webrtc_stream(rt, "acme")
    assert rt.memory.footprints([sid, other])[other] == Footprint(tokens=0, memory_bytes=0)
    assert rt.frames.waiting([sid, other]) == {sid: 3, other: 0}


def test_render_lists_the_newest_streams_up_to_the_cap(fake_redis: redis.Redis) -> None:
    rt = _runtime(fake_redis, metrics_max_streams=2)
    sids = [service.create_webrtc_stream(rt, LOCAL_TENANT) for _ in range(3)]
    for i, sid in enumerate(sids):  # distinct creation times: the zset orders by them
        fake_redis.zadd("vm:streams", {sid: 1000.0 + i})
    fams = parse(metrics_collect.render(rt))
    assert fams["vidmem_redis_up"].value() == 1
    assert fams["vidmem_streams"].value() == 3
    listed = {dict(lab)["stream_id"] for lab in fams["vidmem_stream_tokens"].series()}
    assert listed == set(sids[1:])
    # embedded mode: the in-process pools count as workers, and their backlog as queue lengths
    assert fams["vidmem_workers"].value(queue="encode") == 1
    assert fams["vidmem_queue_length"].value(queue="encode") == 0
    assert fams["vidmem_broker_up"].value() == 1


def test_stream_series_are_summed_by_kind_unless_streams_may_be_named(fake_redis: redis.Redis) -> None:
    named = _runtime(fake_redis)  # embedded: one local tenant, per-stream series by default
    sids = [service.create_webrtc_stream(named, tenant) for tenant in ("acme", "globex")]
    cfg = MemoryConfig(budget=64, s_max=4, dim=8, text_tokens=2, dtype="float16")
    for i, sid in enumerate(sids):
        named.memory.create(sid, cfg)
        tokens = np.ones((4, 4, 8), np.float32)
        named.memory.append(sid, [EncodedFrame(seq=j, t=float(j), tokens=tokens, thumb=b"j", text_tokens=2)
                                  for j in range(i + 1)])  # fmt: skip
    per_stream = parse(metrics_collect.render(named))
    unnamed = Runtime.create(named.settings.model_copy(update={"metrics_per_stream": False}), fake_redis)
    summed_text = metrics_collect.render(unnamed)
    summed = parse(summed_text)
    for name in ("vidmem_stream_tokens", "vidmem_stream_memory_bytes", "vidmem_stream_frames_waiting"):
        series = per_stream[name].series()
        assert {dict(lab)["stream_id"] for lab in series} == set(sids)
        assert {dict(lab)["tenant"] for lab in series} == {"acme", "globex"}
        assert summed[name].series() == {frozenset({("kind", "webrtc")}): sum(series.values())}
        assert summed[name].help.endswith("summed by kind (metrics_per_stream is off).")
    assert per_stream["vidmem_stream_tokens"].value(stream_id=sids[1], tenant="globex", kind="webrtc") > 0
    assert not any(x in summed_text.decode() for x in (*sids, "acme", "globex"))


def test_the_exposition_keeps_the_counters_total_names(fake_redis: redis.Redis) -> None:
    metrics.record(fake_redis, metrics.inc(metrics.ANSWERS, result="ok"))
    text = metrics_collect.render(_runtime(fake_redis)).decode()
    assert "# TYPE vidmem_answers_total counter\n" in text
    assert 'vidmem_answers_total{result="ok"} 1.0\n' in text
    assert "_created" not in text  # recorded counters have no creation time
    assert text.startswith("# HELP vidmem_info ")  # a fresh registry: nothing of this process' own


def test_render_says_when_redis_is_down(closed_port: int) -> None:
    rt = Runtime.create(Settings(redis_url=None), client=quick_redis(f"redis://127.0.0.1:{closed_port}", 0.2))
    fams = parse(metrics_collect.render(rt))
    assert fams["vidmem_redis_up"].value() == 0
    assert set(fams) == {"vidmem_info", "vidmem_redis_up"}


def test_beats_expire_and_are_counted_per_queue(fake_redis: redis.Redis) -> None:
    rt = _runtime(fake_redis)
    health.publish_beat(fake_redis, "celery:a", ["ingest"], ttl_s=10)
    health.publish_beat(fake_redis, "celery:b", ["encode", "answer"], ttl_s=10)
    health.publish_beat(fake_redis, "celery:c", ["answer"], ttl_s=0.05)
    health.publish_beat(fake_redis, "live:x", [health.LIVE], ttl_s=10)
    time.sleep(0.15)
    assert set(health.beats(fake_redis)) == {"celery:a", "celery:b", "live:x"}
    assert not fake_redis.sismember(health.BEATS, "celery:c")  # the expired one left the index
    rt_distributed = Runtime.create(
        rt.settings.model_copy(update={"redis_url": "redis://unused"}), fake_redis
    )
    assert health.worker_counts(rt_distributed) == {"ingest": 1, "encode": 1, "answer": 1, "live_readers": 1}
    health.drop_beat(fake_redis, "celery:a")
    assert health.worker_counts(rt_distributed)["ingest"] == 0


# ---- a live reader records what its feed did -------------------------------------------------------------


class _Feed(QueuedFeed):
    """A feed the test fills by hand (as a WebRTC track would), then ends as the watchdog does."""

    shown = "test feed"

    def __init__(self) -> None:
        super().__init__(queue_size=4)

    def start(self) -> _Feed:
        return self

    def stop(self) -> None:
        self._finish()

    def push(self, n: int) -> None:
        for _ in range(n):
            self._update(state="live", last_frame_wall=time.time())
            self._offer(
                RawFrame(np.zeros((4, 4, 3), np.uint8), wall_time=time.time(), shown_wall=time.time())
            )

    def watchdog(self) -> None:
        self._update(state="ended", last_error="no frame for 10 s (watchdog)")
        self._finish()


def _wait(cond: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_live_reader_records_sampled_dropped_and_the_watchdogs_end(fake_redis: redis.Redis) -> None:
    rt = _runtime(fake_redis, live_heartbeat_s=0.05, live_lease_s=0.5, encode_batch=4)
    rt.submit = lambda *args: None  # type: ignore[method-assign]
    sid = service.create_webrtc_stream(rt, LOCAL_TENANT)
    feed = _Feed()
    feed.push(10)  # 4 queued, 6 dropped: nobody reads yet
    sup = LiveSupervisor(rt, claim=False).start()
    try:
        sup.adopt(sid, feed)
        _wait(lambda: rt.live.status(sid).frames_sampled == 4, "the queued frames handed over")
        feed.watchdog()
        _wait(lambda: rt.records.stream(sid).state == "done", "the stream done")
    finally:
        sup.stop()
    fams = _exposed(fake_redis)
    assert fams["vidmem_frames_sampled_total"].value(kind="webrtc") == 4
    assert fams["vidmem_frames_dropped_total"].value(kind="webrtc") == 6
    assert fams["vidmem_live_ends_total"].value(kind="webrtc", reason="watchdog") == 1
    assert not health.beats(fake_redis)  # claim=False: an API process adopting tracks is no live reader


def test_a_claiming_supervisor_beats_until_it_stops(fake_redis: redis.Redis) -> None:
    rt = _runtime(fake_redis, live_heartbeat_s=0.05)
    sup = LiveSupervisor(rt, name="ingest-1").start()
    try:
        _wait(lambda: "live:ingest-1" in health.beats(fake_redis), "the supervisor's beat")
        assert health.worker_counts(rt)["live_readers"] == 1
    finally:
        sup.stop()
    assert health.beats(fake_redis) == {}
