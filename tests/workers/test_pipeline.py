"""The pipeline functions as plain functions: ingest takeover, exactly-once frames, job progress."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from core.settings import Settings
from tests.stream.clips import make_clip
from workers import pipeline, service
from workers.lease import Lease
from workers.runtime import Runtime
from workers.tenants import LOCAL_TENANT


class Recorder:
    """A dispatcher that records tasks and runs encode/answer at once, in the caller's thread."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def submit(self, task: str, *args: Any) -> None:
        self.sent.append((task, args))
        if task != "ingest":
            pipeline.TASKS[task](self.rt, *args)

    def count(self, task: str) -> int:
        return sum(1 for t, _ in self.sent if t == task)


@pytest.fixture
def rt(model_cache: Path, tmp_path: Path) -> Runtime:
    settings = Settings(
        redis_url=None, model="tiny", model_cache=model_cache, upload_dir=tmp_path / "up", encode_batch=4
    )
    runtime = Runtime.create(settings, fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    runtime.dispatcher = Recorder(runtime)
    return runtime


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=12, fps=25, size=(96, 64))


def submit(rt: Runtime, clip: Path) -> tuple[str, str]:
    info = service.check_video(rt, str(clip), local=True)
    return service.submit_video(rt, LOCAL_TENANT, str(clip), local=True, info=info, fps=2.0)


def frames_in_memory(rt: Runtime, sid: str) -> list[int]:
    st = rt.memory.state(sid)
    return [q for s in st.slots for q in range(s.seq_lo, s.seq_hi + 1)]


def test_ingest_runs_every_frame_once(rt: Runtime, clip: Path) -> None:
    job_id, sid = submit(rt, clip)
    pipeline.ingest_video(rt, job_id)
    job = service.job_view(rt, LOCAL_TENANT, job_id)
    assert job["state"] == "done" and job["progress"] == 1.0
    assert job["frames_sampled"] == job["frames_encoded"] == 24
    assert frames_in_memory(rt, sid) == list(range(24))
    assert isinstance(rt.dispatcher, Recorder) and rt.dispatcher.count("encode") == 6
    pipeline.ingest_video(rt, job_id)  # a duplicate delivery of a finished job does nothing
    assert rt.dispatcher.count("encode") == 6


def test_redelivered_ingest_takes_over_from_a_dead_worker(rt: Runtime, clip: Path) -> None:
    """The first worker encoded 2 chunks, then died holding the lease; the redelivery resumes."""
    job_id, sid = submit(rt, clip)
    first = _frames(rt, clip)[:8]
    pipeline.encode_chunk(rt, job_id, sid, rt.frames.put(sid, first[:4]))
    pipeline.encode_chunk(rt, job_id, sid, rt.frames.put(sid, first[4:]))
    assert frames_in_memory(rt, sid) == list(range(8))
    # The dead worker's last renewal: taken after the encodes, so that their time (a model load on a
    # busy machine) cannot use up the lease before the redelivery starts.
    dead = Lease(rt.redis, pipeline.ingest_lease_key(job_id), ttl_s=1.0)
    assert dead.try_acquire()

    done = threading.Event()
    t = threading.Thread(target=lambda: (pipeline.ingest_video(rt, job_id), done.set()))
    t.start()
    assert not done.wait(0.5), "the redelivery must wait while the lease is held"
    t.join(30)  # the dead worker's lease expires after 1 s
    assert done.is_set()
    job = service.job_view(rt, LOCAL_TENANT, job_id)
    assert job["state"] == "done" and job["frames_encoded"] == 24
    assert frames_in_memory(rt, sid) == list(range(24))  # none lost, none twice
    assert isinstance(rt.dispatcher, Recorder)
    assert rt.dispatcher.count("encode") == 4  # the 2 chunks already in memory were not sent again


def test_a_live_holder_keeps_its_job(rt: Runtime, clip: Path) -> None:
    """While the first worker renews its lease, a duplicate waits, then sees the job done."""
    job_id, _ = submit(rt, clip)
    live = Lease(rt.redis, f"vm:lease:ingest:{job_id}", ttl_s=1.0)
    assert live.try_acquire()
    stop = threading.Event()

    def holder() -> None:
        while not stop.wait(0.2):
            live.renew()
        rt.records.update_job(job_id, state="done")  # the holder finishes the job
        live.release()

    h = threading.Thread(target=holder)
    h.start()
    dup = threading.Thread(target=pipeline.ingest_video, args=(rt, job_id))
    dup.start()
    dup.join(2.0)
    assert dup.is_alive(), "the duplicate must wait while the holder is alive"
    stop.set()
    h.join()
    dup.join(10)
    assert not dup.is_alive()
    assert isinstance(rt.dispatcher, Recorder) and rt.dispatcher.count("encode") == 0


def _frames(rt: Runtime, clip: Path) -> list[Any]:
    from stream.sampling import sample_frames

    side = rt.frame_side()
    return list(sample_frames(str(clip), fps=2.0, size=(side, side), allow_local=True))


def test_expired_frames_fail_the_job_instead_of_hanging(rt: Runtime, clip: Path) -> None:
    job_id, sid = submit(rt, clip)
    frames = _frames(rt, clip)
    pipeline.encode_chunk(rt, job_id, sid, rt.frames.put(sid, frames[:4]))
    retried = rt.frames.put(sid, frames[:4])
    rt.frames.delete(retried)
    pipeline.encode_chunk(rt, job_id, sid, retried)  # a redelivery of an appended chunk: fine
    assert service.job_view(rt, LOCAL_TENANT, job_id)["state"] != "failed"
    lost = rt.frames.put(sid, frames[4:8])
    rt.frames.delete(lost)  # what the TTL does to frames no encoder took in time
    pipeline.encode_chunk(rt, job_id, sid, lost)
    job = service.job_view(rt, LOCAL_TENANT, job_id)
    assert job["state"] == "failed" and job["error"].startswith("frames_expired: frames 4..7")


def test_a_cancelled_answer_never_runs(rt: Runtime, clip: Path) -> None:
    """A question whose client left while its task was queued: the task ends at once, without a model
    call or any event, and counts as cancelled."""
    from workers import metrics
    from workers.answers import AnswerChannel

    job_id, sid = submit(rt, clip)
    pipeline.ingest_video(rt, job_id)
    channel = AnswerChannel(rt.redis, "q1")
    channel.cancel()
    rt._models.clear()  # a model load would show that the task ran
    pipeline.answer_question(rt, sid, "q1", "What is there?", 64)
    assert not rt._models and not rt.redis.exists(channel.key)
    assert rt.redis.hget(metrics.ANSWERS.key, 'result="cancelled"') == b"1"
