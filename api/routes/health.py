"""GET /healthz: liveness and the backends' state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep

router = APIRouter()


@router.get("/healthz")
def healthz(rt: RuntimeDep) -> JSONResponse:
    s = rt.settings
    body: dict[str, Any] = {
        "status": "ok",
        "mode": "embedded" if s.embedded else "distributed",
        "model": s.model,
    }
    try:
        rt.redis.ping()
        body["redis"] = "ok"
    except Exception as e:  # reported, not raised: this endpoint exists to say what is down
        body["redis"] = f"error: {type(e).__name__}"
        body["status"] = "degraded"
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
