"""An ASGI middleware that refuses request bodies over a size limit with 413 ``payload_too_large``.

A multipart ``POST /v1/videos`` (an upload) may be as large as ``max_upload_mb``; any other body (JSON,
an SDP offer, a JSON video URL to ``/v1/videos`` too) at most ``max_body_kb``, so that a huge document
is never read. A declared ``Content-Length`` over the limit is refused before the body is read; a
chunked body is cut off where it passes the limit. The cut-off is raised as Starlette's
``HTTPException(413)``: body readers (FastAPI's JSON reading, the multipart parser) let it through, and
the app's error handler answers it, where any other exception would become FastAPI's 400 "error
parsing the body".
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.middleware import HttpMiddleware


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        size = f"{limit / 2**20:.0f} MiB" if limit >= 2**20 else f"{limit / 2**10:.0f} KiB"
        super().__init__(413, f"request body over {size}")


class BodyLimit(HttpMiddleware):
    upload_path = "/v1/videos"

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_body_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        # Only an upload takes a large body: multipart to the upload route, nothing else.
        ctype = headers.get(b"content-type", b"").strip().lower()
        upload = (
            scope["method"] == "POST"
            and scope["path"] == self.upload_path
            and ctype.startswith(b"multipart/form-data")
        )
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(_TooLarge(limit), scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as e:  # escaped the app's error handler (a body read outside a route): not a 500
            if not started:
                await self._refuse(e, scope, receive, send)

    @staticmethod
    async def _refuse(e: _TooLarge, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response("payload_too_large", e.detail, 413)(scope, receive, send)
