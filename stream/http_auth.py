"""Answers to an HTTP server's login challenge (``WWW-Authenticate``) from a URL's user name and password:
Basic, or Digest (RFC 7616) with MD5 or SHA-256 (or their ``-sess`` forms), ``qop=auth`` or none (RFC 2069).

FFmpeg's http protocol sends no credentials until a server asks, then answers the challenge it got
(libavformat/httpauth.c); most IP cameras ask for Digest. ``stream.guarded_http`` does the same: each
request goes without credentials (or with the login an earlier 401 of that server set up), and on a 401
once more with ``Login.authorization`` for the challenge ``choose`` picked.

Pure: knows nothing about sockets, URLs or FFmpeg; standard library only. Nothing here puts the password
in a message.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"[\s,]*({_TOKEN})")
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_QUOTED}|{_TOKEN})\s*(?:,|$)")
"""One ``name=value`` of a challenge (a token or a quoted string without control characters), and the
comma after it. A token not followed by ``=`` starts the next challenge (or is a token68, ignored)."""

_ESCAPED = re.compile(r"\\(.)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
"""Digest algorithms answered (``-sess`` forms too), the strongest first."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: its scheme (lowercase) and parameters (names
    lowercase, values unquoted)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        """A Digest challenge's algorithm as the server wrote it (MD5 when absent, RFC 7616)."""
        return self.params.get("algorithm", "MD5")

    @property
    def qops(self) -> list[str]:
        return [q.strip().lower() for q in self.params.get("qop", "").split(",") if q.strip()]


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` header values ``values`` (one header may hold several,
    comma-separated), in order."""
    found = []
    for value in values:
        at = 0
        while (scheme := _SCHEME.match(value, at)) is not None:
            at, params = scheme.end(), {}
            while (param := _PARAM.match(value, at)) is not None:
                raw = param.group(2)
                params[param.group(1).lower()] = _ESCAPED.sub(r"\1", raw[1:-1]) if raw[:1] == '"' else raw
                at = param.end()
            found.append(Challenge(scheme.group(1).lower(), params))
    return found


def _rank(challenge: Challenge) -> int:
    """How much ``choose`` prefers a challenge: 0 cannot be answered, then Basic, Digest MD5, SHA-256."""
    if challenge.scheme == "basic":
        return 1
    if challenge.scheme != "digest" or "nonce" not in challenge.params:
        return 0
    qops = challenge.qops
    if qops and "auth" not in qops:  # auth-int only (a hash of the body): not answered
        return 0
    base = challenge.algorithm.upper().removesuffix("-SESS")
    return 2 + len(HASHES) - list(HASHES).index(base) if base in HASHES else 0


def choose(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Digest with the strongest algorithm we know, else Basic; None if none of
    them can be answered."""
    ranked = [(rank, c) for c in challenges if (rank := _rank(c)) > 0]
    return max(ranked, key=lambda rc: rc[0])[1] if ranked else None


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Login:
    """A user name and password answering one ``challenge`` (from ``choose``); ``authorization`` gives
    the ``Authorization`` value of each request it signs (a Digest login counts its uses of the nonce).

    Raises ValueError for a user name or password with control characters (they would break the
    header)."""

    def __init__(
        self,
        challenge: Challenge,
        user: str,
        password: str,
        cnonce: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        if _rank(challenge) == 0:
            raise ValueError(f"cannot answer a {challenge.scheme!r} challenge")
        if _CONTROL.search(user) or _CONTROL.search(password):
            raise ValueError("the user name or password holds control characters")
        self.challenge, self._user, self._password, self._cnonce = challenge, user, password, cnonce
        self._uses = 0

    @property
    def scheme(self) -> str:
        return self.challenge.scheme

    def authorization(self, method: str, uri: str) -> str:
        """The ``Authorization`` header value for a ``method`` request of ``uri`` (the request target)."""
        if self.challenge.scheme == "basic":
            pair = f"{self._user}:{self._password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return self._digest(method, uri)

    def _digest(self, method: str, uri: str) -> str:
        """RFC 7616 section 3.4: response = H(H(A1):nonce:nc:cnonce:qop:H(A2)) (H(H(A1):nonce:H(A2))
        without qop), A1 = user:realm:password (``-sess``: H(that):nonce:cnonce), A2 = method:uri."""
        params, algorithm = self.challenge.params, self.challenge.algorithm
        hash_ = HASHES[algorithm.upper().removesuffix("-SESS")]

        def h(text: str) -> str:
            return hash_(text.encode()).hexdigest()

        realm, nonce = params.get("realm", ""), params["nonce"]
        self._uses += 1
        nc, cnonce = f"{self._uses:08x}", self._cnonce()
        ha1 = h(f"{self._user}:{realm}:{self._password}")
        if algorithm.upper().endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}")
        qop = "auth" if self.challenge.qops else None
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}") if qop else h(f"{ha1}:{nonce}:{ha2}")
        userhash = params.get("userhash", "").lower() == "true"
        fields = [
            ("username", _quoted(h(f"{self._user}:{realm}") if userhash else self._user)),
            ("realm", _quoted(realm)),
            ("nonce", _quoted(nonce)),
            ("uri", _quoted(uri)),
            ("algorithm", algorithm),
            ("response", _quoted(response)),
        ]
        if qop:
            fields += [("qop", qop), ("nc", nc), ("cnonce", _quoted(cnonce))]
        if "opaque" in params:
            fields.append(("opaque", _quoted(params["opaque"])))
        if userhash:
            fields.append(("userhash", "true"))
        return "Digest " + ", ".join(f"{name}={value}" for name, value in fields)
