"""TLS to a client's host under a network policy: one rule for https (``stream.guarded_http``) and rtsps
(``stream.rtsp_relay``), and the words of a refused certificate.

Whether a certificate is verified is ``NetworkPolicy.verifies_tls(address)`` for the checked address
connected to: by default ("public") a public address must show a valid certificate for the URL's host,
while an address the policy had to allow (a LAN camera, which usually has a self-signed certificate) is
encrypted but not verified, like FFmpeg's own default (``tls_verify=0``). A refusal names how the
operator changes the rule (``NetworkPolicy.tls_hint``).

Knows nothing about HTTP, RTSP or FFmpeg; standard library only.
"""

from __future__ import annotations

import ssl

from stream.errors import UnreachableSource, why


def client_context(verify: bool) -> ssl.SSLContext:
    """A client context: with ``verify``, the system's CAs and the host name checked; without, neither
    (the connection is encrypted, the peer not authenticated)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_failure(shown: str, exc: ssl.SSLError | OSError, hint: str) -> UnreachableSource:
    """The error for a TLS handshake with ``shown`` that failed with ``exc``: a refused certificate names
    ``hint`` (how to change the rule); any other failure says what TLS said."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or why(exc)
        tail = f"; {hint}" if hint else ""
        return UnreachableSource(f"the TLS certificate of {shown} was refused ({detail}){tail}")
    return UnreachableSource(f"TLS with {shown} failed ({why(exc)})")
