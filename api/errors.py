"""Domain errors -> HTTP, in one place. Every error body is ``{"error": {"code", "message"}}``
(``api.schemas.ErrorPublic``), and the OpenAPI schema says so for every operation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorDetail, ErrorPublic
from core.errors import STATUS, VidmemError


class ApiError(VidmemError):
    """A refusal of the HTTP layer itself (authentication, a body's form), with extra headers if any."""

    def __init__(
        self, code: str, message: str, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.headers = headers


def error_response(
    code: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorPublic(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _error_doc(low: int) -> dict[str, Any]:
    """The OpenAPI response of every status in ``low``..``low + 99``: ErrorPublic, with its codes."""
    codes: dict[int, list[str]] = defaultdict(list)
    for code, status in STATUS.items():
        if low <= status < low + 100:
            codes[status].append(code)
    named = "; ".join(f"{status}: {', '.join(sorted(c))}" for status, c in sorted(codes.items()))
    what = "The request was refused" if low == 400 else "The service cannot answer now (or a bug)"
    return {
        "description": f"{what}. `error.code` is one of {named}, or another code of this status.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}},
    }


def _document_errors(schema: dict[str, Any]) -> None:
    """Describe the error bodies this module sends (``4XX``, ``5XX``) on every operation, in place of
    FastAPI's default 422 ``HTTPValidationError`` (``{"detail"}``), which this API never sends. A status an
    operation documents itself (``/healthz``'s 503) keeps its own schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error.pop("$defs", {}), ErrorPublic=error)
    ranges = {"4XX": _error_doc(400), "5XX": _error_doc(500)}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for status, doc in ranges.items():
                responses.setdefault(status, doc)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_errors(generate())  # FastAPI's schema, cached in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(VidmemError)
    async def _refused(_: Request, e: VidmemError) -> JSONResponse:
        headers = dict(getattr(e, "headers", None) or {})
        if e.retry_after_s is not None:
            headers["Retry-After"] = str(e.retry_after_s)
        if e.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(e.code, str(e), e.status, headers=headers)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _store_down(_: Request, e: Exception) -> JSONResponse:
        msg = "the data store (Redis) is unreachable; try again later"
        return error_response("store_unavailable", msg, 503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        return error_response("validation_error", msgs or "invalid request", 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",  # e.g. a malformed multipart body, too many files or fields
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(e.status_code, "http_error")
        return error_response(code, str(e.detail), e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        # A 5xx is always a bug; still answer in the API's error shape, without internals.
        # (Starlette re-raises the exception after this response, so the server logs it.)
        return error_response(
            "internal_error", f"internal error ({type(e).__name__}); see the server log", 500
        )
