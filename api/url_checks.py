"""The pre-checks of client URLs (probe a video URL, open a camera) on threads of their own, bounded.

A check may take ~30 s against a slow or silent server. Checks run on worker threads outside the shared
pool that serves the API's other blocking calls, at most ``url_check_workers`` at once and at most
``url_check_per_tenant`` for one tenant, and are never queued: a check beyond either bound is refused at
once (429 ``too_many_checks`` with ``Retry-After``). So slow URLs never hold the threads that serve other
requests (``/healthz`` and other tenants included). A check keeps its place until its thread is done,
even if its client went away.

Knows nothing about URLs: it runs blocking callables for tenants.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from api.errors import ApiError

T = TypeVar("T")

RETRY_AFTER_S = 5


class UrlChecks:
    """Counts of running checks per tenant; used from the event loop only (no lock needed)."""

    def __init__(self, workers: int, per_tenant: int) -> None:
        self.workers, self.per_tenant = workers, per_tenant
        self._limiter = anyio.CapacityLimiter(workers)
        self._running: Counter[str] = Counter()

    async def run(self, tenant: str, fn: Callable[[], T]) -> T:
        """``fn()`` on a thread of this pool, for ``tenant``; ApiError 429 at once when over a bound."""
        self._take(tenant)
        check = asyncio.ensure_future(anyio.to_thread.run_sync(fn, limiter=self._limiter))
        check.add_done_callback(lambda t: self._done(tenant, t))
        return await asyncio.shield(check)  # a request cancelled meanwhile leaves the check running

    def _done(self, tenant: str, check: asyncio.Future[Any]) -> None:
        self._release(tenant)
        if not check.cancelled():
            check.exception()  # retrieved: its request may be gone (the request re-raises it otherwise)

    def _take(self, tenant: str) -> None:
        total, mine = sum(self._running.values()), self._running[tenant]
        if mine >= self.per_tenant:
            why = f"tenant {tenant!r} already has {mine} URL checks running (limit {self.per_tenant})"
        elif total >= self.workers:
            why = f"the server already runs {total} URL checks (limit {self.workers})"
        else:
            self._running[tenant] += 1
            return
        raise ApiError("too_many_checks", f"{why}; try again shortly", 429,
                       headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip

    def _release(self, tenant: str) -> None:
        self._running[tenant] -= 1
        if self._running[tenant] <= 0:
            del self._running[tenant]
