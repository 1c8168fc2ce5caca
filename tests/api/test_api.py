"""The v1 API's happy path in embedded mode (fakeredis, in-process workers, the tiny model, CPU).

One module-scoped app: an uploaded clip is followed from 202 to its memory, questions (JSON and SSE),
thumbnails and deletion; a URL submission is served by a loopback HTTP server.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import BUDGET, ApiClips, assert_error, parse_sse, upload, wait_job
from tests.stream.servers import HttpServer


@pytest.fixture(scope="module")
def done_upload(client: TestClient, api_clips: ApiClips) -> dict[str, Any]:
    """Upload the 6 s clip at fps=1, budget=512 and follow its job to the end."""
    r = upload(client, api_clips.small, fps=1, budget=BUDGET)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert set(accepted) == {"job_id", "stream_id"}
    assert all(isinstance(v, str) and v for v in accepted.values())
    readings = wait_job(client, accepted["job_id"])
    return {"accepted": accepted, "readings": readings}


def test_upload_job_progress_and_counts(done_upload: dict[str, Any]) -> None:
    readings = done_upload["readings"]
    accepted = done_upload["accepted"]
    keys = {"job_id", "stream_id", "state", "progress", "frames_sampled", "frames_encoded", "error"}
    for job in readings:
        assert set(job) == keys
        assert job["job_id"] == accepted["job_id"] and job["stream_id"] == accepted["stream_id"]
        assert job["state"] in ("queued", "running", "done", "failed")
        assert 0.0 <= job["progress"] <= 1.0
        assert 0 <= job["frames_encoded"] <= 6 and 0 <= job["frames_sampled"] <= 6
    progress = [j["progress"] for j in readings]
    assert progress == sorted(progress), f"progress went back: {progress}"
    encoded = [j["frames_encoded"] for j in readings]
    assert encoded == sorted(encoded), f"frames_encoded went back: {encoded}"
    last = readings[-1]
    assert last["state"] == "done", last
    assert last["error"] is None
    assert last["progress"] == 1.0
    assert last["frames_sampled"] == last["frames_encoded"] == 6


def test_stream_view_and_list(client: TestClient, done_upload: dict[str, Any]) -> None:
    sid = done_upload["accepted"]["stream_id"]
    r = client.get(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["stream_id"] == sid
    assert st["state"] == "done"
    assert st["kind"] == "upload"
    assert st["name"] == "small.mp4"
    assert st["budget"] == BUDGET
    assert st["fps"] == 1.0
    assert st["frames_encoded"] == 6
    assert 0 < st["tokens_used"] <= BUDGET
    assert st["slots"] == 6
    assert st["gaps"] == []
    assert st["error"] is None

    r = client.get("/v1/streams")
    assert r.status_code == 200, r.text
    listed = {s["stream_id"]: s for s in r.json()["streams"]}
    assert sid in listed
    assert listed[sid]["state"] == "done"


def test_memory_layout_and_thumbnails(client: TestClient, done_upload: dict[str, Any]) -> None:
    sid = done_upload["accepted"]["stream_id"]
    r = client.get(f"/v1/streams/{sid}/memory")
    assert r.status_code == 200, r.text
    mem = r.json()
    assert mem["budget"] == BUDGET
    slots = mem["slots"]
    assert len(slots) == 6
    for s in slots:
        assert {"t0", "t1", "side", "tokens"} <= set(s)
        assert s["t0"] <= s["t1"]
        assert s["side"] >= 1
        assert s["tokens"] >= s["side"] * s["side"]
    used = sum(s["tokens"] for s in slots)
    assert used == mem["tokens_used"] <= mem["budget"] == BUDGET
    t0 = [s["t0"] for s in slots]
    assert all(a < b for a, b in itertools.pairwise(t0)), t0
    assert t0[0] == pytest.approx(0.0, abs=0.05)

    for s in slots:
        r = client.get(s["thumbnail"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        assert r.content.startswith(b"\xff\xd8")
        assert len(r.content) > 100


def test_ask_json(client: TestClient, done_upload: dict[str, Any]) -> None:
    sid = done_upload["accepted"]["stream_id"]
    r = client.post(f"/v1/streams/{sid}/ask", json={"question": "What happens in this video?"})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert {"answer", "tokens_used", "budget", "slots_used", "latency_s", "ttft_s"} <= set(ans)
    assert isinstance(ans["answer"], str)
    assert ans["budget"] == BUDGET
    assert ans["slots_used"] == 6
    mem_used = client.get(f"/v1/streams/{sid}/memory").json()["tokens_used"]
    # The answer counts the slot texts it really used; the memory counts their full reserve.
    assert 0 < ans["tokens_used"] <= mem_used <= BUDGET
    assert 0 <= ans["ttft_s"] <= ans["latency_s"]


def test_ask_max_new_tokens(client: TestClient, done_upload: dict[str, Any]) -> None:
    sid = done_upload["accepted"]["stream_id"]
    r = client.post(f"/v1/streams/{sid}/ask", json={"question": "Describe it.", "max_new_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["slots_used"] == 6


def test_ask_sse(client: TestClient, done_upload: dict[str, Any]) -> None:
    sid = done_upload["accepted"]["stream_id"]
    r = client.post(f"/v1/streams/{sid}/ask", json={"question": "Describe it.", "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "event: piece" in r.text
    events = parse_sse(r.text)
    names = [name for name, _ in events]
    assert names.count("done") == 1 and names[-1] == "done", names
    assert set(names) <= {"piece", "done"}, names
    pieces = [data for name, data in events if name == "piece"]
    assert pieces and all(isinstance(p["text"], str) for p in pieces)
    done = events[-1][1]
    assert {"answer", "tokens_used", "budget", "slots_used", "latency_s"} <= set(done)
    assert 0 < done["tokens_used"] <= BUDGET
    assert done["budget"] == BUDGET
    assert done["answer"].strip() == "".join(p["text"] for p in pieces).strip()
    # the done event's data is plain JSON on one line
    done_line = next(
        line for line in r.text.splitlines() if line.startswith("data:") and '"tokens_used"' in line
    )
    assert json.loads(done_line[len("data:") :])["tokens_used"] == done["tokens_used"]


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["mode"] == "embedded" and body["redis"] == "ok"


def test_url_submission(client: TestClient, web: HttpServer) -> None:
    # Credentials in the URL must never come back in any response.
    url = web.url("clip.mp4").replace("http://", "http://alice:s3cr3tpw@") + "?token=t0psecret"
    r = client.post("/v1/videos", json={"url": url, "fps": 1, "budget": 256, "name": "from-url"})
    assert r.status_code == 202, r.text
    acc = r.json()
    readings = wait_job(client, acc["job_id"])
    last = readings[-1]
    assert last["state"] == "done", last
    assert last["frames_sampled"] == last["frames_encoded"] == 3
    st = client.get(f"/v1/streams/{acc['stream_id']}")
    assert st.status_code == 200
    assert st.json()["kind"] == "url" and st.json()["name"] == "from-url"
    assert st.json()["budget"] == 256
    mem = client.get(f"/v1/streams/{acc['stream_id']}/memory").json()
    assert len(mem["slots"]) == 3 and mem["tokens_used"] <= mem["budget"] == 256
    for text in (st.text, client.get("/v1/streams").text, client.get(f"/v1/jobs/{acc['job_id']}").text):
        assert "s3cr3tpw" not in text and "t0psecret" not in text


def test_stop_then_purge(client: TestClient, api_clips: ApiClips) -> None:
    r = upload(client, api_clips.short, fps=1)
    assert r.status_code == 202, r.text
    sid, jid = r.json()["stream_id"], r.json()["job_id"]
    assert wait_job(client, jid)[-1]["state"] == "done"

    r = client.delete(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    assert r.json()["stream_id"] == sid and r.json()["deleted"] is False
    # stopping keeps the stream and its memory
    assert client.get(f"/v1/streams/{sid}").json()["state"] in ("done", "stopped")
    assert len(client.get(f"/v1/streams/{sid}/memory").json()["slots"]) == 3

    r = client.delete(f"/v1/streams/{sid}", params={"purge": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True
    assert_error(client.get(f"/v1/streams/{sid}"), 404, "unknown_stream")
    assert_error(client.get(f"/v1/streams/{sid}/memory"), 404, "unknown_stream")
    assert_error(client.get(f"/v1/streams/{sid}/slots/0/thumbnail"), 404, "unknown_stream")
    assert_error(client.post(f"/v1/streams/{sid}/ask", json={"question": "x"}), 404, "unknown_stream")
    assert_error(client.delete(f"/v1/streams/{sid}"), 404, "unknown_stream")
    assert sid not in {s["stream_id"] for s in client.get("/v1/streams").json()["streams"]}


def test_keyframes_mode_upload(client: TestClient, api_clips: ApiClips) -> None:
    # 3 s with a keyframe every second: 3 keyframes.
    r = upload(client, api_clips.short, mode="keyframes")
    assert r.status_code == 202, r.text
    last = wait_job(client, r.json()["job_id"])[-1]
    assert last["state"] == "done", last
    assert last["frames_encoded"] == 3


# ---- cleanup, stopping and purging while a job runs ----------------------------------------


def test_upload_file_removed_after_ingest(client: TestClient, api_clips: ApiClips, upload_dir: Path) -> None:
    before = set(upload_dir.glob("*"))
    r = upload(client, api_clips.short, fps=1)
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job_id"])[-1]["state"] == "done"
    deadline = time.monotonic() + 5  # the file goes right after the job is marked done
    while set(upload_dir.glob("*")) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(upload_dir.glob("*")) <= before, "the ingested upload is still in upload_dir"


def test_stop_while_ingesting_stays_stopped(client: TestClient, api_clips: ApiClips) -> None:
    r = upload(client, api_clips.long, fps=4)
    assert r.status_code == 202, r.text
    sid, jid = r.json()["stream_id"], r.json()["job_id"]
    assert client.delete(f"/v1/streams/{sid}").status_code == 200
    last = wait_job(client, jid)[-1]
    assert client.get(f"/v1/streams/{sid}").json()["state"] == "stopped"
    assert last["frames_encoded"] < 80, "the whole video was ingested after the stream was stopped"


def test_purge_while_ingesting(client: TestClient, api_clips: ApiClips) -> None:
    r = upload(client, api_clips.long, fps=4)
    assert r.status_code == 202, r.text
    sid, jid = r.json()["stream_id"], r.json()["job_id"]
    assert client.delete(f"/v1/streams/{sid}", params={"purge": "true"}).status_code == 200
    wait_job(client, jid, timeout_s=5)
    assert_error(client.get(f"/v1/streams/{sid}"), 404, "unknown_stream")
    assert_error(client.get(f"/v1/streams/{sid}/memory"), 404, "unknown_stream")
