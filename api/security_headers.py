"""An ASGI middleware that adds the browser security headers to every HTTP response (page, static files,
API answers and errors alike), unless the response set them itself.

The Content-Security-Policy allows the page's own files only: scripts from this origin (no inline script,
no ``eval``), styles from this origin (no ``style`` attributes; setting ``element.style`` from a script
is allowed), images from this origin plus ``blob:`` (thumbnails fetched with the API key) and ``data:``
(the empty favicon), requests to this origin only, and no framing (also ``X-Frame-Options: DENY``).

Knows nothing about routes or settings.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from api.middleware import HttpMiddleware

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeaders(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                present = {name.lower() for name, _ in msg.get("headers", [])}
                extra = [(name, value) for name, value in HEADERS if name not in present]
                msg["headers"] = [*msg.get("headers", []), *extra]
            await send(msg)

        await self.app(scope, receive, send_with_headers)
