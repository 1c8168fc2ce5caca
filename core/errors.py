"""The one base of the errors vidmem explains to its callers, and the HTTP status of every error code.

An error says what went wrong as a stable ``code`` (the ``error.code`` of the API's JSON body). Its HTTP
``status`` follows from the code (``STATUS``, the one table of them; 400 for a code not in it), and a
condition that passes (a queue away, a limit reached) says when to try again (``retry_after_s``, the
``Retry-After`` header). The API turns every ``VidmemError`` into its response in one handler
(``api.errors``); workers report ``code`` and the message to a waiting client.
"""

from __future__ import annotations

STATUS: dict[str, int] = {
    "unknown_job": 404,
    "unknown_stream": 404,
    "unknown_slot": 404,
    "not_found": 404,
    "forbidden_url": 400,
    "bad_request": 400,
    "unreachable_source": 422,
    "corrupt_video": 422,
    "not_a_video": 415,
    "no_video_stream": 415,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "empty_memory": 409,
    "backend_mismatch": 409,
    "empty_window": 409,
    "bad_time_window": 422,
    "validation_error": 422,
    "answer_timeout": 504,
    "bad_sdp": 400,
    "no_video": 422,
    "unsupported_codec": 422,
    "too_many_peers": 429,
    "broker_unavailable": 503,
    "no_worker": 503,
    "too_many_checks": 429,
    "store_unavailable": 503,
    "unauthorized": 401,
    "quota_exceeded": 429,
    "rate_limited": 429,
}


class VidmemError(Exception):
    """A refusal with a ``code``, its HTTP ``status`` and, where waiting helps, ``retry_after_s``.

    Subclasses name their code as a class attribute; a few (``ServiceError``, ``ApiError``) take it per
    instance."""

    code: str = "bad_request"
    retry_after_s: int | None = None

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.status = status if status is not None else STATUS.get(self.code, 400)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s
