"""The web page in a real browser: headless Chromium shares its (fake) camera over WebRTC, the frames land
in the memory, a question typed in the page streams its answer in, the timeline shows thumbnails, an
upload shows its progress; killing the browser ends the stream within the watchdog time.

Assertions are on the DOM and the API; a screenshot of the page is saved under the test's tmp dir as an
artifact, never compared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Playwright

from tests.integration.procs import embedded_env, run_api
from tests.stream.live_helpers import wait_until
from tests.web.conftest import WATCHDOG_S, BrowserPage, Server, _browser_page

pytestmark = pytest.mark.integration


def _view(server: Server, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{server.base}/v1/streams/{sid}", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _share_camera(bp: BrowserPage, server: Server) -> str:
    """Open the page, share the camera; return the new stream's id once frames are in its memory."""
    page = bp.page
    page.goto(server.base + "/")
    assert page.title()
    page.click("#share-camera")
    page.wait_for_selector("#share-status[data-state=connected]")
    sid = page.get_attribute("#share-status", "data-stream-id")
    assert sid, "the page shows no stream id for the shared camera"
    wait_until(lambda: _view(server, sid)["frames_encoded"] >= 3, 30, "camera frames in the memory")
    return sid


def test_share_camera_ask_and_timeline(browser_page: BrowserPage, server: Server, tmp_path: Path) -> None:
    page = browser_page.page
    sid = _share_camera(browser_page, server)

    view = _view(server, sid)
    assert view["kind"] == "webrtc" and view["state"] == "live", view
    assert view["resolution"] == "640x360", view  # the bitrate hints: full resolution from the start

    # The live status and the stream list show it.
    page.wait_for_function(
        "() => /^\\s*[1-9]\\d*\\s*\\/\\s*\\d+/.test(document.querySelector('#live-frames').textContent)"
    )
    assert page.text_content("#live-state").strip() == "live"
    assert "/" in page.text_content("#live-tokens")
    page.wait_for_selector(f"#streams li[data-stream-id='{sid}'][data-kind=webrtc]")

    # The timeline renders the memory's slots with their thumbnails, refreshed as the stream grows.
    page.wait_for_function("() => document.querySelectorAll('#timeline .slot img.thumb').length >= 3")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#timeline img.thumb')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    newest = page.eval_on_selector_all(
        "#timeline .slot", "els => Math.max(...els.map(e => +e.dataset.slotId))"
    )
    grown = f"() => [...document.querySelectorAll('#timeline .slot')].some(e => +e.dataset.slotId > {newest})"
    page.wait_for_function(grown, timeout=20_000)  # refreshed: slots of newer frames appear

    # A question typed in the page: the answer streams in, piece by piece.
    page.evaluate(
        """() => { window._answerChanges = 0;
        new MutationObserver(() => window._answerChanges++).observe(document.querySelector('#answer'),
            {childList: true, characterData: true, subtree: true}); }"""
    )
    page.fill("#question", "What did the camera show?")
    page.click("#ask")
    page.wait_for_selector("#answer-status[data-state=done]", timeout=60_000)
    answer = page.text_content("#answer")
    assert answer and answer.strip(), "no answer shown"
    assert page.evaluate("window._answerChanges") > 1, "the answer did not arrive in pieces"
    assert "slot" in page.text_content("#answer-meta")
    assert not page.is_visible("#error"), page.text_content("#error")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    assert browser_page.outside == [], f"the page reached outside the server: {browser_page.outside}"

    # Stop hangs up: the stream is done (README, "Stream states"), at once and not by the watchdog.
    page.click("#stop-share")
    stopped_at = time.monotonic()
    ended = wait_until(lambda: (v := _view(server, sid))["state"] in ("done", "stopped") and v, 10, "the end")
    took = time.monotonic() - stopped_at
    print(f"Stop: the stream was {ended['state']} {took:.2f} s after the click ({ended['last_error']})")
    assert ended["state"] == "done" and "closed" in (ended["last_error"] or ""), repr(ended)
    assert took < WATCHDOG_S, f"the stream ended {took:.1f} s after Stop: by the watchdog, not the hang-up"

    # Once the memory stops changing, the timeline shows exactly its slots and token counts.
    def page_slots() -> list[list[int]]:
        js = "els => els.map(e => [Number(e.dataset.slotId), Number(e.dataset.tokens)])"
        return page.eval_on_selector_all("#timeline .slot", js)  # type: ignore[no-any-return]

    def api_slots() -> list[list[int]]:
        memory = httpx.get(f"{server.base}/v1/streams/{sid}/memory", timeout=10).json()
        return [[m["slot_id"], m["tokens"]] for m in memory["slots"]]

    wait_until(lambda: (p := page_slots()) == api_slots() and p, 15, "the timeline showing the final memory")
    assert all(t > 0 for _, t in page_slots())
    assert browser_page.csp_violations == [], browser_page.csp_violations


def test_killing_the_browser_ends_the_stream(browser_page: BrowserPage, server: Server) -> None:
    sid = _share_camera(browser_page, server)
    encoded = _view(server, sid)["frames_encoded"]
    browser_page.chromium.kill()
    killed = time.monotonic()
    wait_until(lambda: _view(server, sid)["state"] == "done", WATCHDOG_S + 10, "the stream ended")
    took = time.monotonic() - killed
    print(f"the stream ended {took:.2f} s after the browser was killed (watchdog {WATCHDOG_S} s)")
    view = _view(server, sid)
    # The watchdog's time, plus one reader heartbeat and the hand-over of what was left.
    assert took <= WATCHDOG_S + 3, f"the stream ended {took:.1f} s after the browser died"
    assert "watchdog" in (view["last_error"] or "") or "failed" in (view["last_error"] or ""), view
    assert view["frames_encoded"] >= encoded
    config = httpx.get(f"{server.base}/v1/webrtc/config", timeout=10).json()
    assert config["peers"] == 0, config
    # What it showed stays queryable.
    r = httpx.post(f"{server.base}/v1/streams/{sid}/ask", json={"question": "and then?"}, timeout=60)
    assert r.status_code == 200, r.text


def test_upload_shows_progress_and_completes(
    browser_page: BrowserPage, server: Server, camera_clip: Path
) -> None:
    page = browser_page.page
    page.goto(server.base + "/")
    page.evaluate(
        """() => { window._uploadStates = [];
        const el = document.querySelector('#upload-status');
        new MutationObserver(() => window._uploadStates.push(el.dataset.state))
            .observe(el, {attributes: true, attributeFilter: ['data-state']}); }"""
    )
    page.set_input_files("#upload-file", str(camera_clip))
    page.fill("#upload-fps", "0.5")
    page.click("#upload")
    page.wait_for_selector("#upload-status[data-state=done]", timeout=120_000)
    states = page.evaluate("window._uploadStates")
    assert states[0] == "uploading" and states[-1] == "done", states
    assert {"queued", "running"} & set(states), states
    assert page.eval_on_selector("#upload-progress", "e => e.value") == 1
    assert page.eval_on_selector("#job-progress", "e => e.value") == 1
    sid = page.get_attribute("#selected-stream", "data-stream-id")
    assert sid
    view = _view(server, sid)
    assert view["kind"] == "upload" and view["state"] == "done" and view["frames_encoded"] > 0, view
    page.wait_for_function("() => document.querySelectorAll('#timeline .slot img.thumb').length > 0")
    assert not page.is_visible("#error"), page.text_content("#error")
    assert browser_page.csp_violations == [], browser_page.csp_violations


def test_errors_are_shown(browser_page: BrowserPage, server: Server) -> None:
    page = browser_page.page
    page.goto(server.base + "/")
    page.fill("#camera-url", "file:///etc/passwd")
    page.click("#add-camera")
    page.wait_for_selector("#error", state="visible")
    text = page.text_content("#error") or ""
    assert "scheme" in text.lower() or "forbidden" in text.lower() or "not allowed" in text.lower(), text
    assert browser_page.csp_violations == [], browser_page.csp_violations


SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def test_page_runs_under_its_security_policy(browser_page: BrowserPage, server: Server) -> None:
    """The page and its files carry the security headers; the policy is enforced (an injected inline
    script, an inline event handler, an inline style attribute and a framed copy of the page are all
    blocked, and reported), while the page itself works without a single violation (the other tests
    check that while they use it). (``eval`` cannot be tried from here: code the DevTools protocol runs
    is exempt from the page's policy.)"""
    page = browser_page.page
    responses = {}
    page.on("response", lambda r: responses.setdefault(r.url.removeprefix(server.base), r.all_headers()))
    page.goto(server.base + "/")
    page.wait_for_selector("#streams[data-state=ok]", state="attached")
    for path in ("/", "/static/app.js", "/static/style.css", "/v1/streams"):
        headers = responses.get(path) or httpx.get(server.base + path, timeout=10).headers
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name, headers)
        csp = headers.get("content-security-policy", "")
        for directive in ("script-src 'self'", "default-src 'self'", "frame-ancestors 'none'"):
            assert directive in csp, (path, csp)
    assert browser_page.csp_violations == [], browser_page.csp_violations

    ran = page.evaluate(
        """() => {
        const s = document.createElement('script');
        s.textContent = 'window._inlineRan = true';
        document.head.append(s);
        const b = document.createElement('button');
        b.setAttribute('onclick', 'window._handlerRan = true');
        document.body.append(b);
        b.click();
        b.remove();
        document.body.setAttribute('style', 'outline: 5px solid red');
        return {inline: window._inlineRan === true, handler: window._handlerRan === true,
                styled: getComputedStyle(document.body).outlineStyle};
    }"""
    )
    assert ran == {"inline": False, "handler": False, "styled": "none"}, ran
    frame = page.evaluate(
        f"""() => new Promise(done => {{
        const f = document.createElement('iframe');
        f.src = '{server.base}/';
        f.onload = () => {{ let framed; try {{ framed = !!f.contentDocument.querySelector('#ask'); }}
                           catch (e) {{ framed = false; }} done(framed); }};
        document.body.append(f);
    }})"""
    )
    assert frame is False, "the page could be framed"
    wait_until(lambda: len(browser_page.csp_violations) >= 3, 5, "the violations reported")
    reported = " ".join(browser_page.csp_violations)
    assert "script-src" in reported and "style-src" in reported, browser_page.csp_violations


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    """``vidmem serve`` with ``tiny-qwen3-vl`` (token-id prompts, M-RoPE, DeepStack levels)."""
    logs = tmp_path_factory.mktemp("serve_qwen3")
    env = embedded_env(model_cache, logs / "uploads", model="tiny-qwen3-vl", budget=512, max_new_tokens=8)
    with run_api(env, logs) as (base, proc):
        yield Server(base, proc)


def test_the_page_works_unchanged_with_qwen3(
    camera: Path, playwright: Playwright, tmp_path: Path, qwen3_server: Server, camera_clip: Path
) -> None:
    """The page knows nothing of the model: an upload completes and a question streams its answer."""
    with _browser_page(camera, playwright, tmp_path / "chromium.log", qwen3_server.base) as bp:
        _upload_and_ask(bp, qwen3_server, camera_clip)


def _upload_and_ask(browser_page: BrowserPage, qwen3_server: Server, camera_clip: Path) -> None:
    page = browser_page.page
    page.goto(qwen3_server.base + "/")
    page.set_input_files("#upload-file", str(camera_clip))
    page.fill("#upload-fps", "0.5")
    page.click("#upload")
    page.wait_for_selector("#upload-status[data-state=done]", timeout=120_000)
    sid = page.get_attribute("#selected-stream", "data-stream-id")
    assert sid and _view(qwen3_server, sid)["frames_encoded"] > 0
    page.wait_for_function("() => document.querySelectorAll('#timeline .slot img.thumb').length > 0")
    page.fill("#question", "What did the camera show?")
    page.click("#ask")
    page.wait_for_selector("#answer-status[data-state=done]", timeout=60_000)
    assert (page.text_content("#answer") or "").strip(), "no answer shown"
    assert "slot" in (page.text_content("#answer-meta") or "")
    assert not page.is_visible("#error"), page.text_content("#error")
    assert browser_page.csp_violations == [], browser_page.csp_violations
