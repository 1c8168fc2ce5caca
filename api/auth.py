"""Who is asking: the tenant of a request's API key (``Authorization: Bearer vmk_...``).

Distributed mode needs a key on every ``/v1`` call. The embedded mode runs without keys (every request
is the tenant ``local``); its settings refuse any address but loopback, so only this machine reaches it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from workers.tenants import LOCAL_TENANT, ApiKeys

# auto_error=False: a missing key gets this API's JSON error (401), not FastAPI's {"detail": ...} 403.
# Declared here so that the OpenAPI schema tells clients (and fuzzers) about the bearer scheme.
_bearer = HTTPBearer(auto_error=False, description="An API key from `vidmem keys create`.")


async def tenant_of(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    rt = request.app.state.runtime
    if rt.settings.embedded:
        tenant = LOCAL_TENANT
    else:
        if credentials is None:
            raise ApiError("unauthorized", "send an API key: Authorization: Bearer <key>", 401)
        key = await run_in_threadpool(ApiKeys(rt.redis).lookup, credentials.credentials)
        if key is None:
            raise ApiError("unauthorized", "unknown or revoked API key", 401)
        tenant = key.tenant
    request.state.tenant = tenant  # for the access log
    return tenant


TenantDep = Annotated[str, Depends(tenant_of)]
