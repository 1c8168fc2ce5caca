"""An ASGI middleware writing one access-log line per HTTP request, and giving each a request id.

The line (logger ``vidmem.access``) carries ``method``, ``path``, ``status``, ``duration_ms``, ``client``,
and ``tenant`` when the auth dependency set ``request.state.tenant``. The request id is the client's
``X-Request-ID`` when it is a short token, else a new one; it is sent back in ``X-Request-ID`` and is in
the log context of everything the request logs (``core.logs``). The query string is not logged (it can
hold secrets). Duration runs until the last byte of the body is sent (an SSE answer: its whole length).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import Message, Receive, Scope, Send

from api.middleware import HttpMiddleware
from core.logs import log_context

log = logging.getLogger("vidmem.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AccessLog(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status = 500  # unless a response starts: an exception escaped the app
        start = time.perf_counter()

        async def send_with_id(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(msg)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                client = scope.get("client")
                fields = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                    "tenant": (scope.get("state") or {}).get("tenant"),
                    "client": client[0] if client else None,
                }
                extra = {k: v for k, v in fields.items() if v is not None}
                log.info("%s %s %d", scope["method"], scope["path"], status, extra=extra)
