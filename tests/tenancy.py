"""Calls of every API operation that names a stream, job or slot: what the tenant-isolation tests walk.

The operations come from the API's own OpenAPI schema, so a new route with an id is covered (or fails
the tests, if it takes a body these helpers do not know) without anyone remembering to add it.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

ID_ROUTES = {
    "/v1/jobs/{job_id}",
    "/v1/streams/{stream_id}",
    "/v1/streams/{stream_id}/memory",
    "/v1/streams/{stream_id}/ask",
    "/v1/streams/{stream_id}/thumbnail",
    "/v1/streams/{stream_id}/slots/{slot_id}/thumbnail",
}
"""Operations with ids the API had when these tests were written (the schema must still have them)."""


class Client(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...
    def request(self, method: str, url: str, **kwargs: Any) -> Any: ...


def v1_operations(c: Client) -> list[tuple[str, str]]:
    """(path, METHOD) of every /v1 operation, from the server's OpenAPI schema."""
    paths = c.get("/openapi.json").json()["paths"]
    return [(p, m.upper()) for p, ops in paths.items() if p.startswith("/v1/") for m in ops]


def id_operations(c: Client) -> list[tuple[str, str]]:
    """The /v1 operations with a path id, DELETEs last (they end the stream the others read)."""
    ops = [(p, m) for p, m in v1_operations(c) if "{" in p]
    missing = ID_ROUTES - {p for p, _ in ops}
    assert not missing, f"operations gone from the schema: {missing}"
    return sorted(ops, key=lambda pm: pm[1] == "DELETE")


def call(c: Client, path: str, method: str, ids: dict[str, Any], key: str) -> Any:
    """Call ``method path`` with ``ids`` filled in, as the holder of ``key``."""
    url = path.format(**{p: ids[p] for p in re.findall(r"\{([a-z_]+)\}", path)})
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {key}"}}
    if path.endswith("/thumbnail") and "{slot_id}" not in path:
        kwargs["params"] = {"t": 0}
    if method == "DELETE":
        kwargs["params"] = {"purge": "true"}  # the strongest delete: erase the stream and its memory
    if method == "POST":
        assert path.endswith("/ask"), f"add a request body for POST {path}"
        kwargs["json"] = {"question": "what is shown?", "max_new_tokens": 4}
    return c.request(method, url, **kwargs)


def expected_code(path: str) -> str:
    return "unknown_job" if "{job_id}" in path else "unknown_stream"
