"""Bad input to the v1 API: each request gets a specific 4xx with a JSON ``{"error": {"code", "message"}}``
body, refused uploads leave no file behind, and the server keeps serving afterwards.

Statuses follow ARCHITECTURE.md and api/errors.py STATUS: 400 forbidden_url / bad_request,
404 unknown ids, 409 empty_memory, 413 payload_too_large, 415 not_a_video / no_video_stream /
unsupported_media_type, 422 corrupt_video / unreachable_source / validation_error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import (
    BUDGET,
    LOCAL_BASE,
    ApiClips,
    assert_error,
    make_settings,
    no_new_uploads,
    running_client,
    upload,
    wait_job,
)
from tests.stream.clips import garble, make_audio_only, truncate
from tests.stream.servers import HttpServer
from workers import service
from workers.records import StreamRecord, new_id

UNKNOWN = "0" * 32


@pytest.fixture(autouse=True)
def still_serving(client: TestClient) -> Iterator[None]:
    """After every bad request the server still answers."""
    yield
    r = client.get("/healthz")
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def bad_files(api_clips: ApiClips, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_files")
    text = root / "notes.mp4"
    text.write_text("hello, I am a text file wearing a video suffix\n" * 10)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    junk = root / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 64)
    return {
        "text": text,
        "empty": empty,
        "junk": junk,
        "truncated_head": truncate(api_clips.small, root / "truncated_head.mp4", 0.05),
        "truncated_half": truncate(api_clips.small, root / "truncated_half.mp4", 0.5),
        "garbled": garble(api_clips.small, root / "garbled.mp4"),
        "audio_m4a": make_audio_only(root / "audio.m4a"),
        "audio_mp4": make_audio_only(root / "audio_only.mp4"),
    }


@pytest.fixture(scope="module")
def done_stream(client: TestClient, api_clips: ApiClips) -> str:
    """A stream whose job finished (for ask validation and unknown-slot tests)."""
    r = upload(client, api_clips.short, fps=1)
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job_id"])[-1]["state"] == "done"
    return str(r.json()["stream_id"])


# ---- uploads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("text", 415, "not_a_video"),
        ("junk", 415, "not_a_video"),
        ("empty", 415, "not_a_video"),
        ("truncated_head", 422, "corrupt_video"),
        ("truncated_half", 422, "corrupt_video"),
        ("audio_m4a", 415, "no_video_stream"),
        ("audio_mp4", 415, "no_video_stream"),
    ],
)
def test_bad_upload(
    client: TestClient, upload_dir: Path, bad_files: dict[str, Path], kind: str, status: int, code: str
) -> None:
    with no_new_uploads(upload_dir):
        err = assert_error(upload(client, bad_files[kind], fps=1), status, code)
    # the message names the client's file, never the server-side path it was saved to
    assert str(upload_dir) not in err["message"], err


def test_garbled_upload_refused_before_queueing(
    client: TestClient, upload_dir: Path, bad_files: dict[str, Path]
) -> None:
    r = upload(client, bad_files["garbled"], fps=1)
    if r.status_code == 202:  # let its job end before the next test (it fails: corrupt_video)
        last = wait_job(client, r.json()["job_id"])[-1]
        assert last["state"] == "failed" and last["error"].startswith("corrupt_video")
    assert_error(r, 422, "corrupt_video")


def test_upload_odd_filename_is_not_trusted(
    client: TestClient, upload_dir: Path, api_clips: ApiClips, bad_files: dict[str, Path]
) -> None:
    """The client's file name never decides the server-side path (no traversal, no odd characters)."""
    names = ("../../../../tmp/evil.mp4", "a.mp4\n", "x. mp4", "con:cat.mp4", "noext", "a.\x01\x7f")
    for name in names:
        with no_new_uploads(upload_dir):
            err = assert_error(upload(client, bad_files["text"], name=name), 415, "not_a_video")
            assert str(upload_dir) not in err["message"], err
    before = set(upload_dir.glob("*"))
    r = upload(client, api_clips.short, name="../../../../tmp/evil.mp4", fps=1)
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job_id"])[-1]["state"] == "done"
    assert not Path("/tmp/evil.mp4").exists()
    assert all(p.parent == upload_dir for p in set(upload_dir.glob("*")) - before)


def test_upload_without_file_field(client: TestClient, upload_dir: Path, api_clips: ApiClips) -> None:
    with no_new_uploads(upload_dir):
        r = client.post(
            "/v1/videos", data={"fps": "1"}, files={"video": ("c.mp4", api_clips.short.read_bytes())}
        )
        assert_error(r, 400, "bad_request")
        # fields only, no file part at all
        r = client.post(
            "/v1/videos",
            content=b'--xx\r\nContent-Disposition: form-data; name="fps"\r\n\r\n1\r\n--xx--\r\n',
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert_error(r, 400, "bad_request")


def test_upload_file_field_as_text(client: TestClient, upload_dir: Path) -> None:
    """A multipart ``file`` part that is a plain field, not a file."""
    body = b'--xx\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n--xx--\r\n'
    headers = {"content-type": "multipart/form-data; boundary=xx"}
    with no_new_uploads(upload_dir):
        assert_error(client.post("/v1/videos", content=body, headers=headers), 400, "bad_request")


@pytest.mark.parametrize(
    "fields",
    [{"fps": "abc"}, {"fps": "-1"}, {"fps": "0"}, {"fps": "1000"}, {"budget": "abc"}, {"budget": "5"},
     {"budget": "1.5"}, {"mode": "everything"}],
)  # fmt: skip
def test_upload_bad_fields(
    client: TestClient, upload_dir: Path, api_clips: ApiClips, fields: dict[str, str]
) -> None:
    with no_new_uploads(upload_dir):
        assert_error(upload(client, api_clips.short, **fields), 422, "validation_error")


def test_malformed_multipart(client: TestClient, upload_dir: Path) -> None:
    with no_new_uploads(upload_dir):
        for ctype in ("multipart/form-data", "multipart/form-data; boundary=xx"):
            r = client.post("/v1/videos", content=b"garbage", headers={"content-type": ctype})
            err = assert_error(r, 400)
            assert err["code"] == "bad_request"


def test_two_files(client: TestClient, upload_dir: Path, api_clips: ApiClips) -> None:
    data = api_clips.short.read_bytes()
    with no_new_uploads(upload_dir):
        r = client.post("/v1/videos", files=[("file", ("a.mp4", data)), ("file", ("b.mp4", data))])
        assert_error(r, 400, "bad_request")


@pytest.mark.parametrize(
    ("content", "ctype"),
    [(b"hello", "text/plain"), (b"hello", None), (b"<x/>", "application/xml"),
     (b"url=http://x/", "application/x-www-form-urlencoded")],
)  # fmt: skip
def test_wrong_content_type(client: TestClient, content: bytes, ctype: str | None) -> None:
    headers = {"content-type": ctype} if ctype else {}
    assert_error(client.post("/v1/videos", content=content, headers=headers), 415, "unsupported_media_type")


# ---- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///x",
        "File:///etc/passwd",
        "concat:/etc/passwd|/etc/hostname",
        "subfile,,start,0,end,100,,:/etc/passwd",
        "data:video/mp4;base64,AAAAIGZ0eXBpc29t",
        "gopher://127.0.0.1/x",
        "ftp://127.0.0.1/x.mp4",
        "rtsp://127.0.0.1/x",
        "pipe:0",
        "crypto+http://127.0.0.1/x",
        "HTTP://127.0.0.1/x.mp4",
        "/etc/passwd",
        "etc/passwd",
        "http://",
        "http:///x.mp4",
        "http://127.0.0.1:99999/x.mp4",
        "http://127.0.0.1/a b.mp4",
        "http://127.0.0.1/\x00.mp4",
    ],
)
def test_forbidden_url(client: TestClient, url: str) -> None:
    assert_error(client.post("/v1/videos", json={"url": url}), 400, "forbidden_url")


def test_unreachable_url(client: TestClient, closed_port: int) -> None:
    r = client.post("/v1/videos", json={"url": f"http://127.0.0.1:{closed_port}/clip.mp4"})
    assert_error(r, 422, "unreachable_source")


def test_url_http_404(client: TestClient, web: HttpServer) -> None:
    assert_error(client.post("/v1/videos", json={"url": web.url("missing.mp4")}), 422, "unreachable_source")


@pytest.mark.parametrize("name", ["hello.txt", "page.html"])
def test_url_serving_text(client: TestClient, web: HttpServer, name: str) -> None:
    assert_error(client.post("/v1/videos", json={"url": web.url(name)}), 415, "not_a_video")


def test_url_serving_multiline_text(client: TestClient, web: HttpServer) -> None:
    r = client.post("/v1/videos", json={"url": web.url("notes.txt")})
    if r.status_code == 202:  # let its job end before the next test
        wait_job(client, r.json()["job_id"])
    assert_error(r, 415, "not_a_video")


def test_url_redirect_to_file_scheme(client: TestClient, web: HttpServer) -> None:
    assert_error(client.post("/v1/videos", json={"url": web.url("redirect-file")}), 400, "forbidden_url")


@pytest.mark.parametrize(
    "body",
    [
        {"budget": 512},
        {"url": None},
        {"url": 123},
        {"url": ""},
        {"url": ["http://127.0.0.1/x.mp4"]},
        {"url": "http://127.0.0.1/x.mp4", "budget": "abc"},
        {"url": "http://127.0.0.1/x.mp4", "budget": 5},
        {"url": "http://127.0.0.1/x.mp4", "fps": -1},
        {"url": "http://127.0.0.1/x.mp4", "fps": "fast"},
        {"url": "http://127.0.0.1/x.mp4", "mode": "all"},
        {"url": "http://127.0.0.1/x.mp4", "extra": 1},
        {"url": "http://127.0.0.1/x.mp4", "name": "n" * 201},
        [1, 2],
        "http://127.0.0.1/x.mp4",
        42,
    ],
)
def test_json_wrong_types(client: TestClient, body: Any) -> None:
    assert_error(client.post("/v1/videos", json=body), 422, "validation_error")


def test_json_not_parseable(client: TestClient) -> None:
    for raw in (b"{bad json", b"", b"\xff\xfe"):
        r = client.post("/v1/videos", content=raw, headers={"content-type": "application/json"})
        assert_error(r, 422, "validation_error")


# ---- unknown ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", f"/v1/jobs/{UNKNOWN}", "unknown_job"),
        ("GET", "/v1/jobs/not-even-hex", "unknown_job"),
        ("GET", f"/v1/streams/{UNKNOWN}", "unknown_stream"),
        ("GET", f"/v1/streams/{UNKNOWN}/memory", "unknown_stream"),
        ("GET", f"/v1/streams/{UNKNOWN}/slots/0/thumbnail", "unknown_stream"),
        ("DELETE", f"/v1/streams/{UNKNOWN}", "unknown_stream"),
        ("DELETE", f"/v1/streams/{UNKNOWN}?purge=true", "unknown_stream"),
        ("POST", f"/v1/streams/{UNKNOWN}/ask", "unknown_stream"),
        ("GET", "/v1/nothing-here", "not_found"),
    ],
)
def test_unknown_ids(client: TestClient, method: str, path: str, code: str) -> None:
    kwargs: dict[str, Any] = {"json": {"question": "what?"}} if method == "POST" else {}
    assert_error(client.request(method, path, **kwargs), 404, code)


def test_unknown_slot(client: TestClient, done_stream: str) -> None:
    for slot in (99, -1, 10**20):
        r = client.get(f"/v1/streams/{done_stream}/slots/{slot}/thumbnail")
        assert_error(r, 404, "unknown_slot")
    r = client.get(f"/v1/streams/{done_stream}/slots/abc/thumbnail")
    assert_error(r, 422, "validation_error")


def test_method_not_allowed(client: TestClient) -> None:
    r = client.put("/v1/videos", json={})
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers.get("allow", "")


def test_unexpected_error_is_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug still answers in the error shape (and the server keeps serving)."""

    def boom(*_: Any) -> Any:
        raise RuntimeError("a bug with /secret/internal/details")

    monkeypatch.setattr(service, "stream_view", boom)
    raw = TestClient(client.app, base_url=LOCAL_BASE, raise_server_exceptions=False)
    err = assert_error(raw.get(f"/v1/streams/{UNKNOWN}"), 500, "internal_error")
    assert "/secret/internal" not in err["message"]


# ---- ask ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"question": ""},
        {"question": "x" * 2001},  # over settings.max_question_chars
        {"question": "x" * 100_001},  # over the schema's limit
        {"question": 1},
        {"question": None},
        {"question": ["what?"]},
        {"question": "what?", "stream": "maybe"},
        {"question": "what?", "max_new_tokens": 0},
        {"question": "what?", "max_new_tokens": "many"},
        {"question": "what?", "extra": 1},
        {},
        [],
        "what?",
    ],
)
def test_ask_bad_body(client: TestClient, done_stream: str, body: Any) -> None:
    assert_error(client.post(f"/v1/streams/{done_stream}/ask", json=body), 422, "validation_error")


def test_ask_not_json(client: TestClient, done_stream: str) -> None:
    r = client.post(
        f"/v1/streams/{done_stream}/ask", content=b"what?", headers={"content-type": "text/plain"}
    )
    assert_error(r, 422, "validation_error")
    r = client.post(
        f"/v1/streams/{done_stream}/ask", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "validation_error")


def test_ask_empty_memory(client: TestClient) -> None:
    """A stream that exists but has no encoded frame yet: 409, in JSON and in SSE mode."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    sid = new_id()
    rt.records.create_stream(
        StreamRecord(
            stream_id=sid, kind="url", name="waiting", source="http://127.0.0.1/x.mp4", state="connecting",
            fps=1.0, budget=BUDGET, sample_mode="fps", created_at=time.time(),
        )
    )  # fmt: skip
    for stream in (False, True):
        r = client.post(f"/v1/streams/{sid}/ask", json={"question": "what?", "stream": stream})
        assert_error(r, 409, "empty_memory")
    assert client.get(f"/v1/streams/{sid}/memory").json()["slots"] == []
    assert client.delete(f"/v1/streams/{sid}", params={"purge": "true"}).status_code == 200


# ---- size limit ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_client(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app that accepts at most 1 MiB per request."""
    settings = make_settings(model_cache, tmp_path_factory.mktemp("small_uploads"), max_upload_mb=1)
    with running_client(settings) as c:
        yield c


def test_oversized_upload(small_client: TestClient, api_clips: ApiClips) -> None:
    updir = small_client.app.state.runtime.settings.upload_dir  # type: ignore[attr-defined]
    big = b"\0" * (2 * 2**20)
    with no_new_uploads(updir):
        # declared length
        r = small_client.post("/v1/videos", files={"file": ("big.mp4", big, "video/mp4")})
        assert_error(r, 413, "payload_too_large")

        # chunked: no Content-Length, the limit is enforced while reading
        def chunks() -> Iterator[bytes]:
            yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
            for _ in range(32):
                yield b"\0" * 65536
            yield b"\r\n--xx--\r\n"

        r = small_client.post(
            "/v1/videos", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xx"}
        )
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "payload_too_large")
        # a JSON body over the limit
        r = small_client.post("/v1/videos", json={"url": "http://127.0.0.1/" + "a" * 2 * 2**20})
        assert_error(r, 413, "payload_too_large")
    assert small_client.get("/healthz").status_code == 200
    # a clip under the limit is still accepted and ingested
    ok = upload(small_client, api_clips.short, fps=1)
    assert ok.status_code == 202, ok.text
    assert wait_job(small_client, ok.json()["job_id"])[-1]["state"] == "done"


# ---- last: after all of the above, a valid upload still works --------------------------------


def test_valid_upload_still_works(client: TestClient, api_clips: ApiClips) -> None:
    r = upload(client, api_clips.small, fps=1, budget=BUDGET)
    assert r.status_code == 202, r.text
    last = wait_job(client, r.json()["job_id"])[-1]
    assert last["state"] == "done", last
    assert last["frames_encoded"] == 6
    r = client.post(f"/v1/streams/{last['stream_id']}/ask", json={"question": "what?"})
    assert r.status_code == 200, r.text
