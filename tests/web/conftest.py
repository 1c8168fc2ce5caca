"""Fixtures of the web-page tests: a real ``vidmem serve`` (embedded mode, tiny model), or a real keyed
distributed setup (redis-server, one Celery worker, ``vidmem serve``, API keys of two tenants), and a real
headless Chromium whose fake camera plays a real clip, driven by Playwright over the DevTools protocol.

All are children of the test, stopped (or SIGKILLed) by PID. Chromium comes from the Debian packages
``chromium`` and ``chromium-driver`` (``scripts/system-deps.sh``); Playwright downloads no browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from bench.browser import Chromium, fake_camera
from bench.redis_server import RedisServer
from tests.conftest import TESTDATA
from tests.integration.procs import Proc, distributed_env, embedded_env, run_api, run_cluster
from tests.stream.clips import make_clip
from workers.tenants import ApiKeys

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
    env = embedded_env(
        model_cache, logs / "uploads", budget=512, fps=2, frame_size=64, max_new_tokens=24,
        webrtc_watchdog_s=WATCHDOG_S,
    )  # fmt: skip
    with run_api(env, logs) as (base, proc):
        yield Server(base, proc)


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
    csp_violations: list[str]
    """What the page's Content-Security-Policy blocked (there must be none while the page is used)."""


CSP_VIOLATION = "csp-violation:"
CSP_REPORTER = f"""document.addEventListener('securitypolicyviolation', e =>
    console.error(`{CSP_VIOLATION} ${{e.effectiveDirective}} blocked ${{e.blockedURI || 'inline'}}`));"""


def _csp_violation(text: str, found: list[str]) -> None:
    if text.startswith(CSP_VIOLATION):
        found.append(text)


@contextmanager
def _browser_page(camera: Path, playwright: Playwright, log: Path, base: str) -> Iterator[BrowserPage]:
    """A fresh Chromium (its own profile and fake camera) with one page; requests leaving ``base`` are
    recorded and refused."""
    chromium = Chromium(camera, log).start()
    try:
        browser = playwright.chromium.connect_over_cdp(chromium.cdp_url)
        page = browser.contexts[0].new_page()
        outside: list[str] = []

        def guard(route, request) -> None:  # type: ignore[no-untyped-def]
            if request.url.startswith(base) or request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                outside.append(request.url)
                route.abort()

        page.route("**/*", guard)
        # Each CSP violation is reported on the console, where the test collects it (init scripts come
        # from the DevTools protocol: the page's policy does not apply to them).
        csp_violations: list[str] = []
        page.add_init_script(CSP_REPORTER)
        page.on("console", lambda m: _csp_violation(m.text, csp_violations))
        page.set_default_timeout(30_000)
        yield BrowserPage(chromium, browser, page, outside, csp_violations)
        if chromium.proc is not None and chromium.proc.poll() is None:
            browser.close()
    finally:
        chromium.stop()


@pytest.fixture
def browser_page(
    camera: Path, playwright: Playwright, tmp_path: Path, server: Server
) -> Iterator[BrowserPage]:
    """A fresh Chromium with one page on the embedded ``server``."""
    with _browser_page(camera, playwright, tmp_path / "chromium.log", server.base) as bp:
        yield bp


# ---- distributed mode, with API keys ---------------------------------------------------------------

ASK_PER_MINUTE = 1
"""The keyed server's ask rate of a tenant: the second question within a minute gets 429 rate_limited."""


@dataclass(frozen=True)
class KeyedServer:
    base: str
    key: str
    """An API key of the tenant ``acme``."""
    other_key: str
    """An API key of another tenant, ``globex``."""
    procs: list[Proc]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[KeyedServer]:
    """Distributed mode with real parts: its own redis-server (in a tmp dir: no other test's data), one
    Celery worker (solo pool) for the ingest, encode and answer queues, ``vidmem serve`` on a free port;
    and two API keys of two tenants, made with ``ApiKeys``."""
    logs = tmp_path_factory.mktemp("keyed")
    redis_server = RedisServer(logs).start()
    env = distributed_env(
        redis_server.url, model_cache, upload_dir=logs / "uploads", budget=512, fps=2, max_new_tokens=24,
        ask_per_minute=ASK_PER_MINUTE, log_format="text",
    )  # fmt: skip
    worker = ["worker", "--queues", "ingest,encode,answer", "--pool", "solo", "--name", "web@%h"]
    try:
        with run_cluster(env, logs, worker=worker) as (base, procs):
            if procs["worker"].p.poll() is not None:
                pytest.fail("the worker exited:\n" + procs["worker"].tail())
            client = redis.Redis.from_url(redis_server.url)
            keys = ApiKeys(client)
            key, other = keys.create("acme", "web test")[1], keys.create("globex", "web test")[1]
            client.close()
            yield KeyedServer(base, key, other, list(procs.values()))
    finally:
        redis_server.stop()


@pytest.fixture
def keyed_browser_page(
    camera: Path, playwright: Playwright, tmp_path: Path, keyed_server: KeyedServer
) -> Iterator[BrowserPage]:
    """A fresh Chromium with one page on the keyed ``keyed_server``."""
    with _browser_page(camera, playwright, tmp_path / "chromium.log", keyed_server.base) as bp:
        yield bp
