"""``workers.quotas``: places reserved in one step, turned into streams or given back, expiring when their
holder is gone; the running set follows the stream's state; a browser's stream whose API process is gone
is not counted. Over fakeredis (its Lua runs the same scripts) and, for the race, a real redis-server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from core.settings import Settings
from stream.probe import VideoInfo
from tests.conftest import RedisServer
from workers import quotas, service
from workers.quotas import QuotaExceeded, Reservation
from workers.records import StreamRecord, new_id
from workers.runtime import Runtime


def runtime(client: redis.Redis, **settings: Any) -> Runtime:
    values: dict[str, Any] = {"redis_url": None, "tenant_max_jobs": 3, "tenant_max_live_streams": 2}
    return Runtime.create(Settings(**(values | settings)), client=client)


@pytest.fixture
def rt(fake_redis: redis.Redis) -> Runtime:
    return runtime(fake_redis)


def stream(rt: Runtime, tenant: str, kind: str, held: Reservation | None = None, age_s: float = 0) -> str:
    sid = new_id()
    rec = StreamRecord(sid, kind, "s", "s", "connecting", 1.0, 512, "fps", time.time() - age_s, tenant=tenant)
    member = None if held is None else held.member
    if kind in ("live", "webrtc"):
        rt.live.create(rec, None if kind == "webrtc" else "rtsp://192.0.2.1/x", reservation=member)
    else:
        rt.records.create_stream(rec, reservation=member)
    return sid


def places(rt: Runtime, tenant: str, group: str) -> int:
    return int(rt.redis.zcard(rt.records.running_key(tenant, group)))


def test_reserve_up_to_the_limit(rt: Runtime) -> None:
    held = [quotas.reserve(rt, "acme", "upload") for _ in range(3)]
    with pytest.raises(QuotaExceeded) as info:
        quotas.reserve(rt, "acme", "url")  # uploads and URL videos share tenant_max_jobs
    assert info.value.code == "quota_exceeded" and info.value.retry_after_s > 0
    assert "acme" in str(info.value) and "limit 3" in str(info.value) and "tenant_max_jobs" in str(info.value)
    quotas.reserve(rt, "globex", "upload")  # another tenant's places are its own
    quotas.reserve(rt, "acme", "live")  # and so are live streams
    quotas.release(rt, held[0])
    quotas.reserve(rt, "acme", "upload")


def test_a_place_becomes_the_stream(rt: Runtime) -> None:
    held = quotas.reserve(rt, "acme", "webrtc")
    sid = stream(rt, "acme", "webrtc", held)
    assert places(rt, "acme", "live") == 1
    members = [m.decode() for m in rt.redis.zrange(rt.records.running_key("acme", "live"), 0, -1)]
    assert members == [sid]
    quotas.release(rt, held)  # after the swap: nothing
    assert places(rt, "acme", "live") == 1


@pytest.mark.parametrize("kind", ["upload", "live", "webrtc"])
def test_a_place_given_up_creates_no_stream(rt: Runtime, kind: str) -> None:
    """A request cancelled while its check ran gives its place back; the check's thread then must not
    create the stream anyway (it would run beyond the tenant's limit)."""
    group = "jobs" if kind == "upload" else "live"
    held = quotas.reserve(rt, "acme", kind)
    quotas.release(rt, held)
    with pytest.raises(QuotaExceeded) as info:
        if kind == "upload":
            video = VideoInfo(duration_s=None, fps=None, width=64, height=64, codec="h264", has_audio=False)
            service.submit_video(rt, "acme", "/x.mp4", local=True, info=video, reservation=held)
        elif kind == "live":
            service.create_live_stream(rt, "acme", "rtsp://127.0.0.1:9/x", check=False, reservation=held)
        else:
            service.create_webrtc_stream(rt, "acme", reservation=held)
    assert "given up" in str(info.value)
    assert places(rt, "acme", group) == 0
    assert rt.records.tenant_stream_ids("acme") == [] and rt.live.active() == []


def test_running_set_follows_the_state(rt: Runtime) -> None:
    sid = stream(rt, "acme", "upload", quotas.reserve(rt, "acme", "upload"))
    rt.records.set_stream_state(sid, "live")
    assert places(rt, "acme", "jobs") == 1
    rt.records.set_stream_state(sid, "done")
    assert places(rt, "acme", "jobs") == 0
    rt.records.set_stream_state(sid, "live")  # running again (a late report): counted again
    assert places(rt, "acme", "jobs") == 1
    rt.records.set_stream_state(sid, "stopped", error="stopped")
    rt.records.set_stream_state(sid, "live")  # stopped is final
    assert places(rt, "acme", "jobs") == 0 and rt.records.stream(sid).state == "stopped"
    other = stream(rt, "acme", "live")  # created without a reservation (the command line): counted
    assert places(rt, "acme", "live") == 1
    rt.records.delete_stream(other)
    assert places(rt, "acme", "live") == 0
    assert not rt.records.set_stream_state(other, "live")


def test_delete_and_stop_through_the_service_free_places(rt: Runtime) -> None:
    a, b = (stream(rt, "acme", "live", quotas.reserve(rt, "acme", "live")) for _ in range(2))
    with pytest.raises(QuotaExceeded):
        quotas.reserve(rt, "acme", "live")
    service.delete_stream(rt, "acme", a, purge=False)
    quotas.reserve(rt, "acme", "live")
    service.delete_stream(rt, "acme", b, purge=True)
    quotas.reserve(rt, "acme", "webrtc")


def test_an_abandoned_place_expires_and_a_renewed_one_does_not(fake_redis: redis.Redis) -> None:
    rt = runtime(fake_redis, tenant_reservation_ttl_s=1, tenant_max_jobs=2)
    kept, dropped = quotas.reserve(rt, "acme", "upload"), quotas.reserve(rt, "acme", "upload")
    for _ in range(3):
        time.sleep(0.4)
        quotas.renew(rt, kept)
    quotas.reserve(rt, "acme", "upload")  # 1.2 s on: the abandoned place has expired
    assert rt.redis.zscore(dropped.key, dropped.member) is None
    assert rt.redis.zscore(kept.key, kept.member) is not None
    with pytest.raises(QuotaExceeded):  # the renewed one is still held, past its first TTL
        quotas.reserve(rt, "acme", "upload")
    quotas.renew(rt, dropped)  # an expired place is not brought back
    assert rt.redis.zscore(dropped.key, dropped.member) is None


def test_a_browser_stream_whose_api_process_is_gone_is_not_counted(fake_redis: redis.Redis) -> None:
    rt = runtime(fake_redis, live_lease_s=1.0)
    gone = stream(rt, "acme", "webrtc", age_s=10)  # no heartbeat for 10 s: its API process died
    stream(rt, "acme", "live", age_s=10)  # a camera waiting for an ingest process still counts
    quotas.reserve(rt, "acme", "live")  # 2 running of 2, but the browser's is not counted
    with pytest.raises(QuotaExceeded) as info:
        quotas.reserve(rt, "acme", "live")
    assert "already has 2 live streams" in str(info.value)
    assert rt.records.stream(gone).state == "connecting"  # its record is left as it is
    stream(rt, "globex", "webrtc")  # a browser's stream that is still beating counts
    quotas.reserve(rt, "globex", "webrtc")
    with pytest.raises(QuotaExceeded):
        quotas.reserve(rt, "globex", "webrtc")


def test_parallel_reservations_on_a_real_redis(real_redis: redis.Redis, redis_server: RedisServer) -> None:
    """40 threads reserving at once through two clients (two API processes' worth): exactly 3 win."""
    rts = [runtime(redis.Redis.from_url(redis_server.url)) for _ in range(2)]
    start = threading.Barrier(40)

    def one(i: int) -> bool:
        start.wait()
        try:
            quotas.reserve(rts[i % 2], "acme", "upload")
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(40) as pool:
        won = sum(pool.map(one, range(40)))
    assert won == 3
    assert places(rts[0], "acme", "jobs") == 3
