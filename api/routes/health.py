"""GET /healthz: Redis, the broker and the workers, as ``workers.health.check`` sees them.

200 when the API can work ("ok", or "degraded": a queue has no live worker, so some requests will wait),
503 when Redis or the broker is down.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from api.schemas import HealthPublic
from workers.health import check

router = APIRouter()


@router.get(
    "/healthz", response_model=HealthPublic, responses={503: {"model": HealthPublic, "description": "down"}}
)
async def healthz(request: Request, rt: RuntimeDep) -> JSONResponse:
    # On threads of its own (app.state.health_limiter), never behind the shared pool's other work.
    body = await anyio.to_thread.run_sync(check, rt, limiter=request.app.state.health_limiter)
    return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)
