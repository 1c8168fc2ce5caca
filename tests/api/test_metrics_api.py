"""GET /metrics after a real upload and question (embedded mode, the tiny model), its token, the JSON log
lines a job writes from the in-process worker threads, and the access log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.logs import make_handler
from tests.api.conftest import BUDGET, ApiClips, assert_error, make_settings, running_client, upload, wait_job
from tests.prometheus import parse

TOKEN = "scrape-me-0123456789"


@contextmanager
def json_logs(*loggers: str) -> Iterator[io.StringIO]:
    """What ``loggers`` write at INFO while the block runs, as vidmem's JSON lines."""
    buf = io.StringIO()
    handler = make_handler("json", buf)
    saved = []
    for name in loggers:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        yield buf
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.fixture(scope="module")
def asked(client: TestClient, api_clips: ApiClips) -> dict[str, Any]:
    """The 6 s clip uploaded at fps=1 and encoded, one question answered; the workers' JSON log lines."""
    with json_logs("workers") as logs:
        r = upload(client, api_clips.small, fps=1, budget=BUDGET)
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert wait_job(client, accepted["job_id"])[-1]["state"] == "done"
    r = client.post(
        f"/v1/streams/{accepted['stream_id']}/ask", json={"question": "What?", "max_new_tokens": 4}
    )
    assert r.status_code == 200, r.text
    return accepted | {"answer": r.json(), "logs": logs.getvalue()}


def test_metrics_cover_frames_encode_answers_and_the_stream(
    client: TestClient, asked: dict[str, Any]
) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse(r.text)  # strict: every line is HELP, TYPE or a sample of a declared family

    assert fams["vidmem_frames_sampled_total"].value(kind="upload") == 6
    assert fams["vidmem_frames_encoded_total"].value(kind="upload") == 6
    enc = fams["vidmem_encode_batch_seconds"]
    assert enc.type == "histogram" and enc.value("_count") > 0 and enc.value("_sum") > 0
    for name in ("vidmem_answer_ttft_seconds", "vidmem_answer_seconds"):
        assert fams[name].type == "histogram"
        assert fams[name].value("_count") == 1, name
    assert fams["vidmem_answer_seconds"].value("_sum") >= fams["vidmem_answer_ttft_seconds"].value("_sum") > 0
    assert fams["vidmem_answers_total"].value(result="ok") == 1

    sid = asked["stream_id"]
    labels = {"stream_id": sid, "tenant": "local", "kind": "upload"}
    tokens = fams["vidmem_stream_tokens"].value(**labels)
    assert tokens == asked["answer"]["tokens_used"] > 0
    assert tokens == client.get(f"/v1/streams/{sid}/memory").json()["tokens_used"]
    assert fams["vidmem_stream_memory_bytes"].value(**labels) > 0
    assert fams["vidmem_stream_frames_waiting"].value(**labels) == 0
    assert fams["vidmem_workers"].value(queue="encode") == 1
    assert fams["vidmem_redis_up"].value() == 1


def test_a_job_logs_json_lines_with_its_ids(asked: dict[str, Any]) -> None:
    lines = [json.loads(line) for line in asked["logs"].splitlines()]  # every line is one JSON object
    ingest = [x for x in lines if x["logger"] == "workers.pipeline" and "frames sampled" in x["message"]]
    assert ingest, lines
    line = ingest[0]
    assert line["job_id"] == asked["job_id"] and line["stream_id"] == asked["stream_id"]
    assert line["tenant"] == "local" and line["level"] == "INFO"
    assert line["ts"].endswith("Z")


def test_every_request_gets_an_access_line_and_a_request_id(
    client: TestClient, asked: dict[str, Any]
) -> None:
    with json_logs("vidmem.access") as logs:
        r = client.get(f"/v1/streams/{asked['stream_id']}", headers={"X-Request-ID": "req-42"})
        missing = client.get("/v1/jobs/" + "0" * 32)
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32  # a fresh one
    first, second = (json.loads(line) for line in logs.getvalue().splitlines())
    assert first["request_id"] == "req-42"
    assert (first["method"], first["path"], first["status"]) == (
        "GET",
        f"/v1/streams/{asked['stream_id']}",
        200,
    )
    assert first["duration_ms"] >= 0 and first["tenant"] == "local"
    assert second["status"] == 404 and second["request_id"] == missing.headers["x-request-id"]


def test_metrics_token(model_cache: Path, upload_dir: Path) -> None:
    with running_client(make_settings(model_cache, upload_dir, metrics_token=TOKEN)) as c:
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert_error(
            c.get("/metrics", headers={"Authorization": "Bearer not-the-token"}), 401, "unauthorized"
        )
        assert_error(c.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}), 401, "unauthorized")
        r = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "vidmem_redis_up 1" in r.text
        assert c.get("/healthz").status_code == 200  # the token guards /metrics only
