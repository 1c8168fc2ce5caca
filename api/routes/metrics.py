"""GET /metrics: the whole cluster's metrics in Prometheus' text format (``workers.metrics_collect.render``).

With ``metrics_token`` set, the scraper must send ``Authorization: Bearer <token>`` (tenant API keys do
not open it: metrics show every tenant's streams). Without it, in distributed mode, per-stream series
name no stream or tenant unless ``metrics_per_stream`` is on (``Settings.metrics_stream_labels``).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from api.deps import RuntimeDep
from api.errors import error_response
from workers.metrics_collect import CONTENT_TYPE, render

router = APIRouter()


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, rt: RuntimeDep) -> Response:
    token = rt.settings.metrics_token
    if token is not None and not _authorized(request.headers.get("authorization"), token):
        return error_response(
            "unauthorized", "send the metrics token: Authorization: Bearer <token>", 401,
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return Response(render(rt), media_type=CONTENT_TYPE)
