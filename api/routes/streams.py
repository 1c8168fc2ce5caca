"""Streams, their memories and thumbnails, and questions about them."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import answers
from api.auth import TenantDep
from api.deps import RuntimeDep, UrlChecksDep
from api.errors import ApiError
from api.quota import LivePlace
from api.schemas import (
    JPEG_RESPONSE,
    SSE_RESPONSE,
    AnswerPublic,
    AskRequest,
    DeletePublic,
    LiveStreamCreate,
    MemoryPublic,
    StreamListPublic,
    StreamPublic,
)
from workers import service

router = APIRouter()


@router.post("/v1/streams", status_code=201, response_model=StreamPublic, response_model_exclude_unset=True)
async def create_stream(
    body: LiveStreamCreate, rt: RuntimeDep, tenant: TenantDep, place: LivePlace, checks: UrlChecksDep
) -> dict[str, Any]:
    """Register a live camera feed: RTSP, an HTTP MJPEG URL, or an HLS playlist (checked first, within the
    bounds of concurrent URL checks: else 429 ``too_many_checks``). A tenant with
    ``tenant_max_live_streams`` live streams is refused (429 ``quota_exceeded``)."""
    stream_id = await checks.run(tenant, partial(
        service.create_live_stream, rt, tenant, body.url, fps=body.fps, budget=body.budget, name=body.name,
        check=body.check, reservation=place,
    ))  # fmt: skip
    return await run_in_threadpool(service.stream_view, rt, tenant, stream_id)


@router.get("/v1/streams", response_model=StreamListPublic, response_model_exclude_unset=True)
def list_streams(rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return {"streams": service.list_streams(rt, tenant)}


@router.get("/v1/streams/{stream_id}", response_model=StreamPublic, response_model_exclude_unset=True)
def get_stream(stream_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return service.stream_view(rt, tenant, stream_id)


@router.delete("/v1/streams/{stream_id}", response_model=DeletePublic)
def delete_stream(stream_id: str, rt: RuntimeDep, tenant: TenantDep, purge: bool = False) -> dict[str, Any]:
    service.delete_stream(rt, tenant, stream_id, purge)
    return {"stream_id": stream_id, "deleted": purge, "stopped": True}


@router.get("/v1/streams/{stream_id}/memory", response_model=MemoryPublic, response_model_exclude_unset=True)
def get_memory(stream_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return service.memory_view(rt, tenant, stream_id)


@router.get(
    "/v1/streams/{stream_id}/slots/{slot_id}/thumbnail", response_class=Response, responses=JPEG_RESPONSE
)
def get_thumbnail(stream_id: str, slot_id: int, rt: RuntimeDep, tenant: TenantDep) -> Response:
    data = service.thumbnail(rt, tenant, stream_id, slot_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("/v1/streams/{stream_id}/thumbnail", response_class=Response, responses=JPEG_RESPONSE)
def get_thumbnail_at(
    stream_id: str, t: Annotated[float, Query(allow_inf_nan=False)], rt: RuntimeDep, tenant: TenantDep
) -> Response:
    """What the model saw at stream time ``t`` seconds: the thumbnail of the slot covering ``t`` (or the
    nearest one). The slot and its span are in the ``X-Slot-Id`` and ``X-Slot-Span`` headers."""
    slot_id, t0, t1, data = service.thumbnail_at(rt, tenant, stream_id, t)
    headers = {"X-Slot-Id": str(slot_id), "X-Slot-Span": f"{t0:.3f}-{t1:.3f}", "Cache-Control": "no-cache"}
    return Response(data, media_type="image/jpeg", headers=headers)


@router.post("/v1/streams/{stream_id}/ask", response_model=AnswerPublic, responses=SSE_RESPONSE)
async def ask(stream_id: str, body: AskRequest, request: Request, rt: RuntimeDep, tenant: TenantDep) -> Any:
    """Answer a question over the stream's memory (or a time window of it): JSON, or SSE when ``stream``.

    A client that disconnects before the end cancels the answer: its generation stops."""
    if len(body.question) > rt.settings.max_question_chars:
        raise ApiError(
            "validation_error", f"question longer than {rt.settings.max_question_chars} characters", 422
        )
    reader = await run_in_threadpool(
        service.ask, rt, tenant, stream_id, body.question, body.max_new_tokens, body.since, body.until
    )
    if body.stream:
        return StreamingResponse(
            answers.sse(request, reader),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await answers.collect(request, reader)
