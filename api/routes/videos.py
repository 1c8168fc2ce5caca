"""POST /v1/videos (multipart upload or JSON URL) and GET /v1/jobs/{id}."""

from __future__ import annotations

import re
import shutil
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.auth import TenantDep
from api.deps import RuntimeDep, UrlChecksDep
from api.errors import ApiError
from api.quota import JobPlace
from api.schemas import JobPublic, VideoAccepted, VideoForm, VideoUrlCreate
from stream.errors import SourceError
from workers import service
from workers.quotas import Reservation

router = APIRouter()

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "fps": {"type": "number"},
                        "budget": {"type": "integer"},
                        "mode": {"type": "string", "enum": ["fps", "keyframes"]},
                        "name": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": VideoUrlCreate.model_json_schema()},
        },
        "required": True,
    }
}


@router.post("/v1/videos", status_code=202, response_model=VideoAccepted, openapi_extra=_UPLOAD_DOC)
async def create_video(
    request: Request, rt: RuntimeDep, tenant: TenantDep, place: JobPlace, checks: UrlChecksDep
) -> VideoAccepted:
    """Submit a video: a multipart ``file`` upload, or JSON ``{"url": ...}``. Checked before it is queued.

    A tenant with ``tenant_max_jobs`` videos in progress is refused (429) before the body is read; a URL
    beyond the bounds of concurrent URL checks too (429 ``too_many_checks``)."""
    ctype = request.headers.get("content-type", "").strip().lower()
    if ctype.startswith("multipart/form-data"):
        return await _from_upload(request, rt, tenant, place)
    if ctype.startswith("application/json"):
        try:
            body = VideoUrlCreate.model_validate_json(await request.body())
        except ValidationError as e:
            raise ApiError("validation_error", _msg(e), 422) from None
        info = await checks.run(tenant, partial(service.check_video, rt, body.url, local=False))
        job_id, stream_id = await run_in_threadpool(
            service.submit_video,
            rt,
            tenant,
            body.url,
            local=False,
            info=info,
            fps=body.fps,
            budget=body.budget,
            mode=body.mode,
            name=body.name,
            reservation=place,
        )
        return VideoAccepted(job_id=job_id, stream_id=stream_id)
    raise ApiError("unsupported_media_type", "send multipart/form-data with a file, or JSON with a url", 415)


async def _from_upload(request: Request, rt: RuntimeDep, tenant: str, place: Reservation) -> VideoAccepted:
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError("bad_request", "multipart field 'file' is missing", 400)
    try:
        fields = VideoForm.model_validate(
            {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        )
    except ValidationError as e:
        raise ApiError("validation_error", _msg(e), 422) from None
    path = rt.settings.upload_dir / f"{uuid.uuid4().hex}{_suffix(upload.filename)}"
    try:
        await run_in_threadpool(_save, upload, path)
        if path.stat().st_size == 0:
            raise ApiError("not_a_video", "the uploaded file is empty", 415)
        info = await run_in_threadpool(service.check_video, rt, str(path), local=True)
    except SourceError as e:
        path.unlink(missing_ok=True)
        # Name the client's file, not the server-side path it was saved to.
        shown = repr(_shown_name(upload.filename))
        msg = str(e).replace(repr(str(path)), shown).replace(str(path), shown)
        raise type(e)(msg) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        job_id, stream_id = await run_in_threadpool(
            service.submit_video, rt, tenant, str(path), local=True, info=info, fps=fields.fps,
            budget=fields.budget, mode=fields.mode, name=fields.name or _clean_name(upload.filename),
            reservation=place,
        )  # fmt: skip
    except BaseException:  # not queued (broker down): nothing will ever read the file
        path.unlink(missing_ok=True)
        raise
    return VideoAccepted(job_id=job_id, stream_id=stream_id)


def _suffix(filename: str | None) -> str:
    """The extension of the client's file name, reduced to [a-z0-9] (it is never trusted for a path)."""
    ext = re.sub(r"[^a-z0-9]", "", Path(filename or "").suffix.lower())[:8]
    return f".{ext}" if ext else ""


def _clean_name(filename: str | None) -> str:
    """The client's file name as a stream's name: no directories, no control characters, as long as a
    ``name`` field may be (200 characters); "" if nothing is left."""
    return re.sub(r"[\x00-\x1f\x7f]", "", Path(filename or "").name)[:200]


def _shown_name(filename: str | None) -> str:
    return _clean_name(filename) or "the uploaded file"


def _save(upload: UploadFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)


def _msg(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())


@router.get("/v1/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    return service.job_view(rt, tenant, job_id)
