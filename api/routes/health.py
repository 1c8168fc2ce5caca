"""GET /healthz: Redis, the broker and the workers, as ``workers.health.check`` sees them.

200 when the API can work ("ok", or "degraded": a queue has no live worker, so some requests will wait),
503 when Redis or the broker is down.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from api.schemas import HealthPublic
from workers.health import check

router = APIRouter()


@router.get(
    "/healthz", response_model=HealthPublic, responses={503: {"model": HealthPublic, "description": "down"}}
)
def healthz(rt: RuntimeDep) -> JSONResponse:
    body = check(rt)
    return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)
