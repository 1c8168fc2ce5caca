"""Fixtures of the web-page tests: a real ``vidmem serve`` (embedded mode, tiny model) and a real headless
Chromium whose fake camera plays a real clip, driven by Playwright over the DevTools protocol.

Both are children of the test, stopped (or SIGKILLed) by PID. Chromium comes from the Debian packages
``chromium`` and ``chromium-driver`` (``scripts/system-deps.sh``); Playwright downloads no browser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from bench.browser import Chromium, fake_camera
from tests.conftest import TESTDATA, free_port
from tests.integration.procs import VIDMEM, Proc, stop_all, wait_healthy
from tests.stream.clips import make_clip

WATCHDOG_S = 3.0


@pytest.fixture(scope="session")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real clip for the fake camera: the shared test clip when present, else a generated one."""
    shared = TESTDATA / "big_buck_bunny_60s_640x360.mp4"
    if shared.exists():
        return shared
    return make_clip(tmp_path_factory.mktemp("camclip") / "cam.mp4", seconds=8, fps=25, size=(640, 360))


@pytest.fixture(scope="session")
def camera(camera_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_camera(camera_clip, tmp_path_factory.mktemp("camera") / "cam.mjpeg", (640, 360))


@dataclass(frozen=True)
class Server:
    base: str
    proc: Proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    """``vidmem serve`` in embedded mode on a free port, tiny model, a short WebRTC watchdog."""
    logs = tmp_path_factory.mktemp("serve")
    env = os.environ | {
        "VIDMEM_MODEL": "tiny",
        "VIDMEM_MODEL_CACHE": str(model_cache),
        "VIDMEM_UPLOAD_DIR": str(logs / "uploads"),
        "VIDMEM_BUDGET": "512",
        "VIDMEM_FPS": "2",
        "VIDMEM_FRAME_SIZE": "64",
        "VIDMEM_MAX_NEW_TOKENS": "24",
        "VIDMEM_WEBRTC_WATCHDOG_S": str(WATCHDOG_S),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VIDMEM_REDIS_URL", None)
    port = free_port()
    proc = Proc("serve", [*VIDMEM, "serve", "--port", str(port)], env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield Server(base, proc)
    finally:
        stop_all([proc])


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@dataclass
class BrowserPage:
    chromium: Chromium
    browser: Browser
    page: Page
    outside: list[str]
    """Requests the page tried to make to anything but the server (there must be none: offline page)."""


@pytest.fixture
def browser_page(
    camera: Path, playwright: Playwright, tmp_path: Path, server: Server
) -> Iterator[BrowserPage]:
    """A fresh Chromium (its own profile and fake camera) with one page; requests leaving the server are
    recorded and refused."""
    chromium = Chromium(camera, tmp_path / "chromium.log").start()
    try:
        browser = playwright.chromium.connect_over_cdp(chromium.cdp_url)
        page = browser.contexts[0].new_page()
        outside: list[str] = []

        def guard(route, request) -> None:  # type: ignore[no-untyped-def]
            if request.url.startswith(server.base) or request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                outside.append(request.url)
                route.abort()

        page.route("**/*", guard)
        page.set_default_timeout(30_000)
        yield BrowserPage(chromium, browser, page, outside)
        if chromium.proc is not None and chromium.proc.poll() is None:
            browser.close()
    finally:
        chromium.stop()
