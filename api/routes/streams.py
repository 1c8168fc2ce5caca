"""Streams, their memories and thumbnails, and questions about them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth import TenantDep
from api.deps import RuntimeDep
from api.errors import STATUS, ApiError
from api.quota import LivePlace
from api.schemas import AnswerPublic, AskRequest, LiveStreamCreate
from workers import service
from workers.answers import AnswerEvent, AnswerTimeout

router = APIRouter()


@router.post("/v1/streams", status_code=201)
async def create_stream(
    body: LiveStreamCreate, rt: RuntimeDep, tenant: TenantDep, place: LivePlace
) -> dict[str, Any]:
    """Register a live camera feed: RTSP, an HTTP MJPEG URL, or an HLS playlist (checked first). A tenant
    with ``tenant_max_live_streams`` live streams is refused (429)."""
    stream_id = await run_in_threadpool(
        service.create_live_stream, rt, tenant, body.url, fps=body.fps, budget=body.budget, name=body.name,
        check=body.check, reservation=place,
    )  # fmt: skip
    return await run_in_threadpool(service.stream_view, rt, tenant, stream_id)


@router.get("/v1/streams")
def list_streams(rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return {"streams": service.list_streams(rt, tenant)}


@router.get("/v1/streams/{stream_id}")
def get_stream(stream_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return service.stream_view(rt, tenant, stream_id)


@router.delete("/v1/streams/{stream_id}")
def delete_stream(stream_id: str, rt: RuntimeDep, tenant: TenantDep, purge: bool = False) -> dict[str, Any]:
    service.delete_stream(rt, tenant, stream_id, purge)
    return {"stream_id": stream_id, "deleted": purge, "stopped": True}


@router.get("/v1/streams/{stream_id}/memory")
def get_memory(stream_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return service.memory_view(rt, tenant, stream_id)


@router.get("/v1/streams/{stream_id}/slots/{slot_id}/thumbnail")
def get_thumbnail(stream_id: str, slot_id: int, rt: RuntimeDep, tenant: TenantDep) -> Response:
    data = service.thumbnail(rt, tenant, stream_id, slot_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("/v1/streams/{stream_id}/thumbnail")
def get_thumbnail_at(
    stream_id: str, t: Annotated[float, Query(allow_inf_nan=False)], rt: RuntimeDep, tenant: TenantDep
) -> Response:
    """What the model saw at stream time ``t`` seconds: the thumbnail of the slot covering ``t`` (or the
    nearest one). The slot and its span are in the ``X-Slot-Id`` and ``X-Slot-Span`` headers."""
    slot_id, t0, t1, data = service.thumbnail_at(rt, tenant, stream_id, t)
    headers = {"X-Slot-Id": str(slot_id), "X-Slot-Span": f"{t0:.3f}-{t1:.3f}", "Cache-Control": "no-cache"}
    return Response(data, media_type="image/jpeg", headers=headers)


@router.post("/v1/streams/{stream_id}/ask", response_model=AnswerPublic)
async def ask(stream_id: str, body: AskRequest, rt: RuntimeDep, tenant: TenantDep) -> Any:
    """Answer a question over the stream's memory (or a time window of it): JSON, or SSE when ``stream``."""
    if len(body.question) > rt.settings.max_question_chars:
        raise ApiError(
            "validation_error", f"question longer than {rt.settings.max_question_chars} characters", 422
        )
    events = await run_in_threadpool(
        service.ask, rt, tenant, stream_id, body.question, body.max_new_tokens, body.since, body.until
    )
    if body.stream:
        return StreamingResponse(
            _sse(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return await run_in_threadpool(_collect, events)


def _collect(events: Iterator[AnswerEvent]) -> dict[str, Any]:
    for ev in events:
        if ev.kind == "done":
            return ev.data
        if ev.kind == "error":
            raise ApiError(ev.data["code"], ev.data["message"], STATUS.get(ev.data["code"], 500))
    raise ApiError("answer_failed", "the answer ended without a result", 500)


def _sse(events: Iterator[AnswerEvent]) -> Iterator[str]:
    try:
        for ev in events:
            yield f"event: {ev.kind}\ndata: {json.dumps(ev.data)}\n\n"
    except (AnswerTimeout, RedisConnectionError, RedisTimeoutError) as e:
        # The 200 is already sent: end the stream with an error event, not a silent truncation.
        code = "answer_timeout" if isinstance(e, AnswerTimeout) else "store_unavailable"
        yield f"event: error\ndata: {json.dumps({'code': code, 'message': str(e) or code})}\n\n"
