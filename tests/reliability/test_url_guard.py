"""A client's http(s) URL fetched through the guard (``stream.guarded_http``) behaves like FFmpeg's own http
did: time limits, logins, LAN certificates and range requests. Against a real ``vidmem serve`` (embedded mode,
its policy allowing 127.0.0.2/32 only) with peers on 127.0.0.2:

- servers that answer 200 and then trickle one byte every 0.5 s (in an MP4's body, or in the headers):
  each video and live-stream check is refused (422 ``unreachable_source``) within about the open
  timeout, instead of holding its URL-check slot for as long as the server keeps trickling;
- an MJPEG camera behind a Digest login (most IP cameras): registered and read, its password never shown;
- an https server with a self-signed certificate on the allowed network (a LAN camera or NAS), and an
  http server that serves ranges but does not announce ``Accept-Ranges``: both MP4s (index at the end,
  1 MB past the media) are ingested, read by range requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import embedded_env, run_api
from tests.reliability.conftest import timed
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from tests.stream.http_peers import PASSWORD, URL_PASSWORD, USER, Trickler, far_index, web_peer
from tests.stream.live_helpers import wait_until
from tests.stream.rtsp_peers import self_signed

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

PUBLIC = "127.0.0.2"
OPEN_S = 3
SLACK_S = 3.0
"""How much later than the open timeout a refusal may come (the probe, then the API's answer)."""


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    far_index(make_clip(root / "late.mp4", seconds=3, fps=10, size=(160, 96), codec="libx264"))
    return root


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("guard")
    env = embedded_env(
        model_cache, root / "uploads", frame_size=64, url_allowed_networks=f'["{PUBLIC}/32"]',
        open_timeout_s=OPEN_S, live_open_timeout_s=OPEN_S, live_read_timeout_s=2, live_backoff_max_s=1,
    )  # fmt: skip
    with run_api(env, root) as (base, _):
        yield base


def _client(base: str, figures: TestFigures) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=90, event_hooks={"response": [figures.http_hook]})


def _serving(c: httpx.Client) -> bool:
    return c.get("/healthz").status_code == 200 and c.get("/v1/streams").status_code == 200


def _job_done(c: httpx.Client, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] in ("done", "failed") else None

    job = wait_until(ended, 90, "the job to end")
    assert job["state"] == "done", job
    return job


def test_a_trickling_server_is_refused_within_the_open_timeout(api: str, figures: TestFigures) -> None:
    times = []
    with Trickler(PUBLIC, "body") as body, Trickler(PUBLIC, "headers") as headers, _client(api, figures) as c:
        for peer in (body, headers):
            for route, payload in [
                ("/v1/videos", {"url": peer.url("clip.mp4")}),
                ("/v1/streams", {"url": peer.url("cam.mjpg"), "fps": 1}),
            ]:
                r, elapsed = timed(lambda: c.post(route, json=payload))  # noqa: B023 -- called at once
                assert r.status_code == 422, r.text
                error = r.json()["error"]
                assert error["code"] == "unreachable_source", error
                assert f"did not open within {OPEN_S} s" in error["message"], error
                assert elapsed < OPEN_S + SLACK_S, f"{route} took {elapsed} s"
                times.append(elapsed)
        assert body.connections >= 2 and headers.connections >= 2
        assert _serving(c)
    figures.set(probes=len(times), refused=len(times), slowest_s=max(times), server_serving=1)


def test_a_camera_behind_a_digest_login_is_read(api: str, www: Path, figures: TestFigures) -> None:
    with web_peer(www, PUBLIC, login="digest-sha256") as camera, _client(api, figures) as c:
        r = c.post("/v1/streams", json={"url": camera.url("cam.mjpg", f"{USER}:{URL_PASSWORD}"), "fps": 2})
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]

        def view() -> dict[str, Any]:
            body: dict[str, Any] = c.get(f"/v1/streams/{sid}").json()
            return body

        shown = wait_until(lambda: (v := view())["frames_sampled"] >= 2 and v, 20, "frames from the camera")
        assert camera.authorizations[0] is None and camera.refusals >= 1
        for text in (r.text, str(shown)):
            assert PASSWORD not in text and URL_PASSWORD not in text
        assert c.delete(f"/v1/streams/{sid}?purge=true").status_code == 200
        assert _serving(c)
        figures.set(
            frames_sampled=shown["frames_sampled"], logins_asked=camera.refusals, requests=len(camera.seen)
        )


def test_lan_https_with_a_self_signed_certificate_and_ranges_without_accept_ranges(
    api: str, www: Path, tmp_path: Path, figures: TestFigures
) -> None:
    """The default TLS rule (``VIDMEM_URL_VERIFY_TLS=public``) takes the allowed address's self-signed
    certificate; a server that does not announce ``Accept-Ranges`` is still read by ranges."""
    tls = web_peer(www, PUBLIC, certificate=self_signed(tmp_path))
    plain = web_peer(www, PUBLIC, accept_ranges=False)
    with tls as https_server, plain as ranges_server, _client(api, figures) as c:
        for peer in (https_server, ranges_server):
            r = c.post("/v1/videos", json={"url": peer.url("late.mp4"), "fps": 2})
            assert r.status_code == 202, r.text
            job = _job_done(c, r.json()["job_id"])
            spans = [span for _, span in peer.seen]
            assert spans[0] == "bytes=0-" and any(s not in (None, "bytes=0-") for s in spans), spans
            assert job["frames_sampled"] >= 4, job
        assert _serving(c)
        figures.set(
            https_requests=len(https_server.seen), range_requests=len(ranges_server.seen), server_serving=1
        )
