"""Fuzzing: schemathesis generates requests from the API's own OpenAPI schema, valid and invalid, for
every operation. Not one may get a 5xx (a 5xx is always a bug in this API), and every response must be
what the schema says: a documented status, a documented content type, and a body that validates against
the declared model (``api.schemas``: ``StreamPublic``, ``MemoryPublic``, ``ErrorPublic``, ...).

The app runs keyed (distributed mode) on a real redis-server, with in-process workers and the tiny model.
It holds a finished upload and a registered camera (no reader: distributed mode without `vidmem ingest`),
so that generated ids sometimes hit a real stream (of either kind), job and slot.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup, ServerError

from api.main import create_app
from tests.api.conftest import make_settings, wait_job
from tests.conftest import RedisServer, free_port
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from workers.dispatch import InProcessDispatcher
from workers.runtime import Runtime
from workers.tenants import ApiKeys

pytestmark = pytest.mark.reliability

EXAMPLES = 100
"""Generated requests per operation and mode (positive and negative)."""

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
"""What each response is checked for, besides the error body's shape."""


class Target:
    """The app, and the real ids a generated path may be aimed at (name -> the ids to choose from)."""

    def __init__(self, app: FastAPI, client: TestClient, key: str, ids: dict[str, list[Any]]) -> None:
        self.app, self.client, self.key, self.ids = app, client, key, ids
        self.rng = random.Random(0)


@pytest.fixture(scope="module")
def target(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    s = make_settings(
        model_cache, tmp / "uploads", redis_url=redis_server.url, open_timeout_s=1.0,
        live_open_timeout_s=1.0, live_read_timeout_s=1.0, ask_per_minute=100_000, tenant_max_jobs=100_000,
        tenant_max_live_streams=100_000, answer_timeout_s=30, max_new_tokens=4,
    )  # fmt: skip
    rt = Runtime.create(s)
    rt.redis.flushdb()
    rt.dispatcher = InProcessDispatcher(rt)
    key = ApiKeys(rt.redis).create("fuzz")[1]
    app = create_app(s, rt)
    clip = make_clip(tmp / "clip.mp4", seconds=3, fps=25)
    try:
        with TestClient(app) as c:
            c.headers["Authorization"] = f"Bearer {key}"
            r = c.post("/v1/videos", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
            assert r.status_code == 202, r.text
            job_id, stream_id = r.json()["job_id"], r.json()["stream_id"]
            assert wait_job(c, job_id)[-1]["state"] == "done"
            slot_id = c.get(f"/v1/streams/{stream_id}/memory").json()["slots"][0]["slot_id"]
            camera = {"url": f"rtsp://127.0.0.1:{free_port()}/cam", "check": False, "name": "cam"}
            r = c.post("/v1/streams", json=camera)
            assert r.status_code == 201, r.text
            ids = {"job_id": [job_id], "stream_id": [stream_id, r.json()["stream_id"]], "slot_id": [slot_id]}
            yield Target(app, c, key, ids)
    finally:
        rt.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_server_errors(target: Target, mode: GenerationMode, figures: TestFigures) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    headers = {"Authorization": f"Bearer {target.key}"}
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    figures.set(http_5xx=0, schema_mismatches=0)
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case: Any) -> None:
            check(target, case, headers, figures)

        try:
            fuzz()
        except Unsatisfiable:  # nothing in this operation can be made invalid (e.g. GET /healthz)
            assert mode is GenerationMode.NEGATIVE, op.label
            continue
        figures.add("operations")


def check(target: Target, case: Any, headers: dict[str, str], figures: TestFigures) -> None:
    # Half the time, aim the generated path at the real stream, job and slot (else they are random ids).
    if case.path_parameters and target.rng.random() < 0.5:
        for name in list(case.path_parameters):
            if name in target.ids:
                case.path_parameters[name] = target.rng.choice(target.ids[name])
    response = case.call(headers=headers)
    figures.add("requests")
    figures.add(f"status_{response.status_code // 100}xx")
    if response.status_code >= 500:
        figures.add("http_5xx")
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as e:
        if any(not isinstance(f, ServerError) for f in e.exceptions):  # a status, type or body not declared
            figures.add("schema_mismatches")
        raise
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
