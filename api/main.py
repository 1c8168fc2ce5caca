"""The FastAPI app. Imports no torch: models live in the workers (or in embedded-mode threads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from api import errors
from api.access_log import AccessLog
from api.limits import BodyLimit
from api.origin_guard import OriginGuard
from api.routes import health, metrics, streams, videos, web, webrtc
from api.rtc import Peers
from api.security_headers import SecurityHeaders
from api.url_checks import UrlChecks
from core.settings import Settings, get_settings
from workers.dispatch import runtime_for
from workers.live import LiveSupervisor
from workers.runtime import Runtime


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    rt = runtime or runtime_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # This process reads its own WebRTC tracks; camera URLs too in embedded mode (distributed mode
        # leaves those to `vidmem ingest`).
        readers = LiveSupervisor(rt, claim=settings.embedded).start()
        app.state.peers = Peers(rt, readers)
        yield
        await asyncio.to_thread(readers.stop)
        await app.state.peers.close_all()
        rt.close()  # embedded mode: stop the in-process worker pools with the server

    app = FastAPI(
        title="vidmem",
        version="0.1.0",
        description="Ask questions about everything a video stream showed.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.url_checks = UrlChecks(settings.url_check_workers, settings.url_check_per_tenant)
    app.state.health_limiter = anyio.CapacityLimiter(2)  # /healthz's own threads (see routes.health)
    errors.install(app)
    for r in (health.router, metrics.router, videos.router, streams.router, webrtc.router, web.router):
        app.include_router(r)
    app.mount("/static", web.static, name="static")
    # Innermost first: each add_middleware wraps the ones before it.
    app.add_middleware(
        BodyLimit,
        max_upload_bytes=settings.max_upload_mb * 2**20,
        max_body_bytes=settings.max_body_kb * 2**10,
    )
    # The keyless embedded server answers loopback names only and no browser page but its own (DNS
    # rebinding, cross-site forms). Keyed mode: bearer keys are never sent by a browser on its own, so
    # no cross-site check; its Host is checked only when allowed_hosts is set (else the proxy's job).
    hosts = settings.allowed_hosts if settings.embedded or settings.allowed_hosts else None
    app.add_middleware(OriginGuard, allowed_hosts=hosts, same_origin_only=settings.embedded)
    app.add_middleware(SecurityHeaders)  # on every response, refusals included
    app.add_middleware(AccessLog)  # outermost: logs every request, refused ones included
    return app
