"""The one base of the errors vidmem explains to its callers.

Each subclass says what went wrong as a stable ``code`` (the ``error.code`` of the API's JSON body), the
HTTP ``status`` the API answers with, and, for a condition that passes (a queue away, a limit reached),
``retry_after_s`` (the ``Retry-After`` header). The API turns every ``VidmemError`` into its response in
one handler (``api.errors``); workers report ``code`` and the message to a waiting client.
"""

from __future__ import annotations

from typing import ClassVar


class VidmemError(Exception):
    code: str = "bad_request"
    status: int = 400
    retry_after_s: int | None = None

    codes: ClassVar[dict[str, int]] = {}
    """Every code a subclass declares, with its status (the API documents them)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            VidmemError.codes[cls.code] = cls.status

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
        if status is not None:
            self.status = status
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s
