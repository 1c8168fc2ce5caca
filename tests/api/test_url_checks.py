"""The bounds of concurrent URL checks (api.url_checks): per tenant, in total, never queued, a place held
until its check's thread is done."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from api.errors import ApiError
from api.url_checks import UrlChecks


async def test_checks_beyond_a_bound_are_refused_at_once() -> None:
    checks = UrlChecks(workers=3, per_tenant=2)
    release = threading.Event()
    running = [asyncio.create_task(checks.run(t, lambda: release.wait(10))) for t in ("a", "a", "b")]
    await asyncio.sleep(0.1)
    for tenant, why in (("a", "tenant 'a' already has 2"), ("c", "the server already runs 3")):
        with pytest.raises(ApiError) as refused:
            await checks.run(tenant, lambda: True)
        assert refused.value.status == 429 and refused.value.code == "too_many_checks"
        assert why in str(refused.value) and refused.value.headers == {"Retry-After": "5"}
    release.set()
    assert await asyncio.gather(*running) == [True, True, True]
    assert await checks.run("c", lambda: "ok") == "ok"  # places freed


async def test_a_cancelled_request_keeps_its_place_until_the_check_ends() -> None:
    checks = UrlChecks(workers=1, per_tenant=1)
    release = threading.Event()
    task = asyncio.create_task(checks.run("a", lambda: release.wait(10)))
    await asyncio.sleep(0.1)
    task.cancel()  # the client went away; the thread still runs
    await asyncio.sleep(0.1)
    with pytest.raises(ApiError):
        await checks.run("b", lambda: True)
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    for _ in range(100):  # the place is freed once the thread is done
        await asyncio.sleep(0.02)
        with contextlib.suppress(ApiError):
            assert await checks.run("b", lambda: True) is True
            return
    pytest.fail("the place was not freed once the check ended")
