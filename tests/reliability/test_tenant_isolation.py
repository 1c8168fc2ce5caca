"""Tenant isolation with real parts: a redis-server, a Celery worker and the API as its own process.

Tenant "tests" uploads a video. With globex's key every operation that names its stream, job or slot is
404 (as if the id did not exist), globex's list is empty, and the memory is untouched; with the owner's
other key every one of those operations is served.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import tenancy
from tests.conftest import RedisServer
from tests.integration.procs import distributed_env, run_cluster
from tests.reliability.conftest import api_client, upload, wait_job
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from workers.tenants import ApiKeys

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    redis.Redis.from_url(redis_server.url).flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", upload_dir=tmp_path / "uploads"
    )
    worker = ["worker", "--queues", "ingest,encode,answer", "--name", "all@%h"]
    with run_cluster(env, tmp_path, worker=worker) as (base, _):
        yield base


def test_every_endpoint_refuses_another_tenants_ids(
    cluster: str, redis_server: RedisServer, tmp_path: Path, figures: TestFigures
) -> None:
    keys = ApiKeys(redis.Redis.from_url(redis_server.url))
    owner2, globex = keys.create("tests", "second")[1], keys.create("globex")[1]
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=10, size=(96, 64))
    with api_client(cluster, redis_server.url, figures) as c:  # a key of tenant "tests"
        r = upload(c, clip, fps=2)
        assert r.status_code == 202, r.text
        ids = r.json()
        assert wait_job(c, ids["job_id"], timeout_s=120)["state"] == "done"
        mem = c.get(f"/v1/streams/{ids['stream_id']}/memory").json()
        ids["slot_id"] = mem["slots"][0]["slot_id"]

        ops = tenancy.id_operations(c)
        for path, method in ops:
            other = tenancy.call(c, path, method, ids, globex)
            assert other.status_code == 404, (method, path, other.status_code, other.text)
            assert other.json()["error"]["code"] == tenancy.expected_code(path), other.text
            figures.add("refused")
            if method == "DELETE":  # globex's DELETE (with purge) changed nothing: stream and memory whole
                assert c.get(f"/v1/streams/{ids['stream_id']}/memory").json() == mem
                assert c.get(f"/v1/streams/{ids['stream_id']}").json()["state"] == "done"
            owner = tenancy.call(c, path, method, ids, owner2)
            assert owner.status_code in (200, 201), (method, path, owner.status_code, owner.text[:300])
            figures.add("served_to_owner")
        listed = c.get("/v1/streams", headers={"Authorization": f"Bearer {globex}"}).json()
        assert listed == {"streams": []}
        figures.set(operations=len(ops))
    assert figures.values.get("http_5xx", 0) == 0
