"""The Celery tasks wait out an outage with Celery's retries, run eagerly here (``Task.apply``): a retry
runs the task again at once, with the retried message's arguments."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.app.task import Task
from celery.exceptions import Reject

from core.settings import Settings
from workers import tasks
from workers.queues import BrokerUnavailable


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of each call of the pipeline function a test replaces (no runtime is built)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks, "runtime", lambda: None)
    return calls


def _failing(calls: list[tuple[Any, ...]], errors: list[BaseException]) -> Any:
    def fn(rt: object, *args: Any) -> None:
        calls.append(args)
        if errors:
            raise errors.pop(0)

    return fn


def test_an_ingest_retried_after_an_outage_takes_its_own_lease_back(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = [redis.exceptions.ConnectionError("down"), BrokerUnavailable("down")]
    monkeypatch.setattr(tasks.pipeline, "ingest_video", _failing(runs, down))
    result = tasks.ingest.apply(args=("job-1",))
    assert result.state == "SUCCESS", result.result
    assert len(runs) == 3
    assert {job for job, _ in runs} == {"job-1"}
    assert len({holder for _, holder in runs}) == 1  # one holder for every attempt of the delivery


@pytest.mark.parametrize("task,fn", [("encode", "encode_chunk"), ("answer", "answer_question")])
def test_encode_and_answer_are_retried_after_an_outage(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch, task: str, fn: str
) -> None:
    down = [redis.exceptions.TimeoutError("slow"), redis.exceptions.ConnectionError("down")]
    monkeypatch.setattr(tasks.pipeline, fn, _failing(runs, down))
    result = getattr(tasks, task).apply(args=("a", "b", "c", 4) if task == "answer" else ("a", "b", "c"))
    assert result.state == "SUCCESS", result.result
    assert len(runs) == 3 and len(set(runs)) == 1


@pytest.mark.parametrize("error", [redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError])
def test_a_wrong_password_is_not_retried(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    monkeypatch.setattr(tasks.pipeline, "encode_chunk", _failing(runs, [error("no")]))
    result = tasks.encode.apply(args=("a", "b", "c"))
    assert result.state == "FAILURE" and isinstance(result.result, error)
    assert len(runs) == 1


def test_a_long_outage_never_runs_out_of_retries(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many retries an outage has taken, the task is retried again (the message waits in the broker,
    at most ``retry_backoff_max`` between tries) rather than given up or given back at once."""
    monkeypatch.setattr(tasks.pipeline, "encode_chunk", _failing(runs, [redis.exceptions.ConnectionError()]))
    result = tasks.encode.apply(args=("a", "b", "c"), retries=10_000)
    assert result.state == "SUCCESS"
    assert len(runs) == 2


def test_a_retry_that_cannot_be_sent_gives_the_message_back(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(self: Task, *args: Any, **kwargs: Any) -> None:
        raise Reject("the broker is down", requeue=False)  # what Celery does when the retry is not sent

    monkeypatch.setattr(Task, "retry", broker_down)
    monkeypatch.setattr(tasks.pipeline, "encode_chunk", _failing(runs, [redis.exceptions.ConnectionError()]))
    result = tasks.encode.apply(args=("a", "b", "c"))
    assert result.state == "REJECTED" and isinstance(result.result, Reject) and result.result.requeue


def test_worker_settings_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDMEM_WORKER_QUEUES", "encode, answer")
    monkeypatch.setenv("VIDMEM_TORCH_THREADS", "3")
    s = Settings()
    assert s.worker_queues == ("encode", "answer") and s.torch_threads == 3
    monkeypatch.delenv("VIDMEM_WORKER_QUEUES")
    monkeypatch.delenv("VIDMEM_TORCH_THREADS")
    assert Settings().worker_queues == () and Settings().torch_threads is None
