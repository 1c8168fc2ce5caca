"""Typed dependencies of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.url_checks import UrlChecks
from core.settings import Settings
from workers.runtime import Runtime

# async: FastAPI would run a plain function on the shared thread pool, which must never be needed just to
# read app.state (a request would then wait behind whatever holds that pool).


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def get_app_settings(request: Request) -> Settings:
    s: Settings = request.app.state.runtime.settings
    return s


async def get_url_checks(request: Request) -> UrlChecks:
    checks: UrlChecks = request.app.state.url_checks
    return checks


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
UrlChecksDep = Annotated[UrlChecks, Depends(get_url_checks)]
