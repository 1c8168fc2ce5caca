"""An ASGI middleware that admits a request only from where this server may be reached.

Two checks, both answered with the API's JSON error before any route runs:

- **Host.** A page that rebinds its own DNS name to 127.0.0.1 reaches a loopback server with its own
  name in ``Host``. So, where the check applies, only loopback names (``localhost``, ``127.0.0.0/8``,
  ``[::1]``; any port) and ``allowed_hosts`` are answered; any other ``Host`` (or none) gets
  421 ``bad_host`` (Misdirected Request: this server is not the authority for that name).
- **Cross-site requests** (``same_origin_only``). A browser sends "simple" requests (a form POST, an
  ``<img>``, a ``fetch`` in ``no-cors`` mode) to any origin without asking it first. A request whose
  ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site`` is refused unless it is a plain navigation (GET
  or HEAD of a page); a request that may change state (any method but GET, HEAD, OPTIONS) is refused
  when it names an ``Origin`` other than this server's own (``<scheme>://<Host>``), ``null`` included:
  403 ``cross_site``. Requests without these headers (curl, the CLI, scripts: not a browser's) pass.

Knows nothing about routes, tenants or keys: ``api.main`` decides where each check applies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from api.middleware import HttpMiddleware

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FOREIGN_SITES = frozenset({b"cross-site", b"same-site"})


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header without its port, lower-cased: ``[::1]:8000`` -> ``[::1]``,
    ``LocalHost`` -> ``localhost``. None if it is not of the form ``name[:port]`` or ``[v6][:port]``."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        host, rest = header[: end + 1], header[end + 1 :]
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
    if not host or host == "[]":
        return None
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return host


def is_loopback_name(host: str) -> bool:
    """``localhost`` or a loopback address literal (``127.0.0.1``, ``127.1.2.3``, ``[::1]``)."""
    if host == "localhost":
        return True
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        return False


class OriginGuard(HttpMiddleware):
    """``allowed_hosts``: the names answered besides loopback, or None to answer any ``Host``.
    ``same_origin_only``: refuse cross-site requests as described in the module's docstring."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None, same_origin_only: bool) -> None:
        super().__init__(app)
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.same_origin_only = same_origin_only

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        host_header = headers.get(b"host", b"").decode("latin-1")
        refusal = self._bad_host(host_header)
        if refusal is None and self.same_origin_only:
            refusal = self._cross_site(scope, headers, host_header)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        code, message, status = refusal
        await error_response(code, message, status)(scope, receive, send)

    def _bad_host(self, host_header: str) -> tuple[str, str, int] | None:
        if self.allowed_hosts is None:
            return None
        host = host_name(host_header)
        if host is not None and (is_loopback_name(host) or host in self.allowed_hosts):
            return None
        shown = repr(host_header[:100]) if host_header else "none"
        return (
            "bad_host",
            f"this server answers to 127.0.0.1, localhost, [::1] and VIDMEM_ALLOWED_HOSTS only; the "
            f"request's Host is {shown}",
            421,
        )

    def _cross_site(
        self, scope: Scope, headers: dict[bytes, bytes], host_header: str
    ) -> tuple[str, str, int] | None:
        method = scope["method"]
        site = headers.get(b"sec-fetch-site")
        navigation = method in ("GET", "HEAD") and headers.get(b"sec-fetch-mode") == b"navigate"
        if site in _FOREIGN_SITES and not navigation:
            return ("cross_site", f"a {site.decode()} request from a browser is refused; use this "
                    "server's own page", 403)  # fmt: skip
        origin = headers.get(b"origin")
        if method in _SAFE_METHODS or origin is None:
            return None
        own = f"{scope.get('scheme', 'http')}://{host_header}".lower()
        given = origin.decode("latin-1").strip().lower()
        if given != own:
            return ("cross_site", f"a {method} from the origin {given[:100]!r} is refused; only this "
                    f"server's own page ({own}) may change its state", 403)  # fmt: skip
        return None
