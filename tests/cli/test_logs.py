"""core.logs: JSON lines with the ids of the work being done, set by context or from task arguments, and
never leaking from one task to the next in a reused pool thread."""

from __future__ import annotations

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.logs import (
    bind_log_context,
    configure_logging,
    current_context,
    in_log_context,
    log_args,
    log_context,
    make_handler,
)

log = logging.getLogger("tests.logs")


def test_a_line_has_its_fields_ids_extras_and_traceback() -> None:
    buf = io.StringIO()
    handler = make_handler("json", buf)
    log.addHandler(handler)
    try:
        with log_context(stream_id="s1", job_id="j1", tenant="acme"):
            try:
                raise ValueError("boom")
            except ValueError:
                log.error("failed %s", "here", exc_info=True, extra={"status": 500})
    finally:
        log.removeHandler(handler)
    [line] = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert line["level"] == "ERROR" and line["logger"] == "tests.logs" and line["message"] == "failed here"
    assert (line["stream_id"], line["job_id"], line["tenant"], line["status"]) == ("s1", "j1", "acme", 500)
    assert "ValueError: boom" in line["exc_info"] and "Traceback" in line["exc_info"]
    assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_contexts_nest_and_end() -> None:
    assert current_context() == {}
    with log_context(job_id="j1", stream_id=""):  # empty ids are left out
        bind_log_context(stream_id="s1")
        with log_context(answer_id="a1"):
            assert current_context() == {"job_id": "j1", "stream_id": "s1", "answer_id": "a1"}
        assert current_context() == {"job_id": "j1", "stream_id": "s1"}
    assert current_context() == {}
    bind_log_context(job_id="nowhere")  # outside any context: nothing is set for good
    assert current_context() == {}


@log_args("job_id", "stream_id", answer_id="request_id")
def _task(job_id: str, stream_id: str = "", request_id: str | None = None) -> dict[str, str]:
    return current_context()


def test_log_args_takes_ids_from_the_arguments() -> None:
    assert _task("j1", "s1") == {"job_id": "j1", "stream_id": "s1"}
    assert _task("", stream_id="s2", request_id="r2") == {"stream_id": "s2", "answer_id": "r2"}
    assert _task.__name__ == "_task"
    with pytest.raises(TypeError, match="no parameters"):
        log_args("nope")(_task)


def test_ids_do_not_leak_between_tasks_of_one_pool_thread() -> None:
    """A ThreadPoolExecutor reuses its thread, and does not carry the submitter's context: each task sets
    its own ids from its arguments, and they are gone when it returns."""
    with ThreadPoolExecutor(1) as pool, log_context(request_id="the-http-request"):
        first = pool.submit(_task, "j1", "s1").result()
        after = pool.submit(current_context).result()
    assert first == {"job_id": "j1", "stream_id": "s1"}
    assert after == {}


def test_a_thread_target_in_context() -> None:
    seen: list[dict[str, str]] = []
    t = threading.Thread(target=in_log_context(lambda: seen.append(current_context()), stream_id="s9"))
    t.start()
    t.join()
    assert seen == [{"stream_id": "s9"}]


def test_text_format_appends_the_ids() -> None:
    buf = io.StringIO()
    handler = make_handler("text", buf)
    log.addHandler(handler)
    try:
        with log_context(stream_id="s1"):
            log.warning("hello")
    finally:
        log.removeHandler(handler)
    assert buf.getvalue().rstrip().endswith("WARNING tests.logs: hello [stream_id=s1]")


def test_configure_logging_installs_one_root_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    try:
        configure_logging("json", "INFO", stream=buf)
        configure_logging("json", "INFO", stream=buf)  # twice: still one handler
        assert len(root.handlers) == 1
        logging.getLogger("celery.worker").info("ready")  # a library's logger propagates to it
        logging.getLogger("celery.worker").debug("not at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert line["logger"] == "celery.worker" and line["message"] == "ready"
    with pytest.raises(ValueError, match="log_format"):
        configure_logging("xml")
