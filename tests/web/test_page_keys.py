"""The web page against a keyed (distributed) server, in a real browser: the first call's 401 makes the page
ask for an API key; with one it lists the tenant's streams, uploads a clip (XHR with the key), shows the
timeline's thumbnails (fetched with the key into blob: URLs), streams an answer and shows a 429. A wrong
key is refused; another tenant's key shows none of the first tenant's streams.

Everything real: redis-server, a Celery worker, ``vidmem serve``, Chromium (fixtures in conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.stream.clips import make_clip
from tests.web.conftest import BrowserPage, KeyedServer

pytestmark = pytest.mark.integration

WRONG_KEY = "vmk_00000000_" + "A" * 43
"""Well-formed, but no key of the server."""

ALL_THUMBS_BLOB = """n => {
    const imgs = [...document.querySelectorAll('#timeline .slot img.thumb')];
    return imgs.length === n
        && imgs.every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0);
}"""


COUNT_BLOBS = """() => {
    window._blobs = new Set();
    const create = URL.createObjectURL.bind(URL), revoke = URL.revokeObjectURL.bind(URL);
    URL.createObjectURL = o => { const u = create(o); window._blobs.add(u); return u; };
    URL.revokeObjectURL = u => { window._blobs.delete(u); revoke(u); };
}"""
"""Counts the page's live object URLs (made, not yet revoked): a leak would show as more than it shows."""

LIVE_BLOBS_ARE_THE_THUMBS = """() => {
    const shown = [...document.querySelectorAll('#timeline img.thumb')].map(i => i.src).sort();
    const live = [...window._blobs].sort();
    return JSON.stringify(shown) === JSON.stringify(live);
}"""


def _focused(page: Page) -> str:
    return str(page.evaluate("() => document.activeElement ? document.activeElement.id : ''"))


def _use_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def test_page_with_api_keys(
    keyed_browser_page: BrowserPage, keyed_server: KeyedServer, tmp_path: Path
) -> None:
    page = keyed_browser_page.page
    srv = keyed_server
    clip = make_clip(tmp_path / "small.mp4", seconds=4, fps=10, size=(160, 96))

    page.add_init_script(f"({COUNT_BLOBS})()")

    # No key yet: the first poll gets 401, the page asks for a key and focuses its field.
    page.goto(srv.base + "/")
    page.wait_for_selector("#error[data-code=unauthorized]", state="visible")
    assert "needs an API key" in page.text_content("#error-message")
    assert "API key" in page.text_content("#api-key-hint")
    assert page.get_attribute("#api-key-hint", "data-state") == "needed"
    assert page.get_attribute("#api-key", "type") == "password"
    assert page.get_attribute("#api-key", "autocomplete") == "off"
    assert _focused(page) == "api-key"
    page.screenshot(path=str(tmp_path / "page-key-prompt.png"))

    # Typing the key (into the focused field) retries the polling: the stream list loads.
    page.keyboard.type(srv.key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#streams[data-state=ok]", state="attached")
    page.wait_for_selector("#error", state="hidden")
    assert page.get_attribute("#api-key-hint", "data-state") == "ok"
    assert page.evaluate("sessionStorage.getItem('vidmem.apiKey')") == srv.key
    assert page.evaluate("localStorage.length") == 0

    # An upload through the page (XHR with the key) reaches done; its thumbnails all load as blob: URLs.
    page.set_input_files("#upload-file", str(clip))
    page.fill("#upload-fps", "2")
    page.click("#upload")
    page.wait_for_selector("#upload-status[data-state=done]", timeout=90_000)
    sid = page.get_attribute("#selected-stream", "data-stream-id")
    assert sid
    page.wait_for_selector(f"#streams li[data-stream-id='{sid}'][data-kind=upload]")
    auth = {"Authorization": f"Bearer {srv.key}"}
    memory = httpx.get(f"{srv.base}/v1/streams/{sid}/memory", headers=auth, timeout=10).json()
    n = len(memory["slots"])
    assert n > 0, memory
    page.wait_for_function(ALL_THUMBS_BLOB, arg=n)
    assert page.evaluate(LIVE_BLOBS_ARE_THE_THUMBS), "object URLs not revoked as the timeline refreshed"

    # A question: its answer streams in, piece by piece.
    page.evaluate(
        """() => { window._answerChanges = 0;
        new MutationObserver(() => window._answerChanges++).observe(document.querySelector('#answer'),
            {childList: true, characterData: true, subtree: true}); }"""
    )
    page.fill("#question", "What is shown?")
    page.click("#ask")
    page.wait_for_selector("#answer-status[data-state=done]", timeout=60_000)
    assert (page.text_content("#answer") or "").strip(), "no answer shown"
    assert page.evaluate("window._answerChanges") > 1, "the answer did not arrive in pieces"
    assert not page.is_visible("#error"), page.text_content("#error")

    # A second question within the minute is over the tenant's rate (1 a minute): the 429 is shown.
    page.click("#ask")
    page.wait_for_selector("#error[data-code=rate_limited]", state="visible")
    assert "retry in" in page.text_content("#error-message")
    assert page.get_attribute("#answer-status", "data-state") == "error"

    # A wrong key: refused, said so, the field focused; nothing of the tenant stays on the page.
    _use_key(page, WRONG_KEY)
    page.wait_for_selector("#api-key-hint[data-state=refused]")
    page.wait_for_selector("#error[data-code=unauthorized]", state="visible")
    assert "unknown or revoked" in page.text_content("#error-message")
    assert _focused(page) == "api-key"
    assert page.eval_on_selector_all("#streams li", "els => els.length") == 0
    assert page.eval_on_selector_all("#timeline img", "els => els.length") == 0
    assert page.evaluate("window._blobs.size") == 0, "the timeline's object URLs outlived it"

    # Another tenant's key: an empty stream list (acme's stream is not globex's).
    _use_key(page, srv.other_key)
    page.wait_for_selector("#streams[data-state=ok]", state="attached")
    page.wait_for_selector("#error", state="hidden")
    assert page.eval_on_selector_all("#streams li", "els => els.length") == 0
    assert page.is_visible("#streams-empty")
    other = {"Authorization": f"Bearer {srv.other_key}"}
    assert httpx.get(f"{srv.base}/v1/streams/{sid}", headers=other, timeout=10).status_code == 404

    # Back to acme's key: the key outlives a reload (sessionStorage), its stream and thumbnails are back.
    _use_key(page, srv.key)
    page.reload()
    page.wait_for_selector(f"#streams li[data-stream-id='{sid}']")
    assert page.input_value("#api-key") == srv.key
    page.click(f"#streams li[data-stream-id='{sid}']")
    page.wait_for_function(ALL_THUMBS_BLOB, arg=n)
    assert page.evaluate(LIVE_BLOBS_ARE_THE_THUMBS)
    assert not page.is_visible("#error"), page.text_content("#error")

    shot = tmp_path / "page-keys.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    outside = keyed_browser_page.outside
    assert outside == [], f"the page reached outside the server: {outside}"
    csp = keyed_browser_page.csp_violations
    assert csp == [], f"the page's security policy blocked: {csp}"
