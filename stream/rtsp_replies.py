"""Read what an RTSP server sends to FFmpeg the way FFmpeg reads it, and refuse every redirect.

FFmpeg's RTSP client follows a ``3xx`` reply to OPTIONS or DESCRIBE by itself (libavformat/rtsp.c,
``ff_rtsp_connect``: on failure with a 3xx status it copies the ``Location`` header into the URL and opens
a new connection there), and no option turns that off. ``ReplyGuard`` sees the server's bytes before
FFmpeg does (``stream.rtsp_relay``) and raises ``Refused`` on any message FFmpeg could act on as a
redirect, before the line that ends that message is passed on.

To agree with FFmpeg on where each message starts, it splits the byte stream exactly like
``ff_rtsp_read_reply`` and ``ff_rtsp_skip_packet``:

- a line ends at ``\\n``; every ``\\r`` is dropped wherever it is; an empty line ends a message's headers;
- a ``$`` as the first character of a message (``\\r`` before it ignored) starts an interleaved packet:
  one channel byte, a 16-bit big-endian length, then that many bytes;
- after the headers come ``Content-Length`` bytes of body (the last such header counts).

Where FFmpeg versions or its two reading modes (a command's reply, or a packet) could split the same
bytes differently, the guard refuses instead of guessing: a ``$`` at the start of a header line, an
interleaved packet of 1 to 7 bytes (``ff_rtsp_tcp_read_packet`` would read its payload as text), a
line longer than FFmpeg's 4,095-byte line buffer or holding a NUL, a ``Content-Length`` that is not
plain digits, or a body over ``MAX_BODY``. A message is refused when its status line would give FFmpeg a
status from 300 to 399 (``atoi`` of the word after ``RTSP/...``), or any of its lines is a
``Location:`` header (case-insensitive, as FFmpeg matches it). Legitimate cameras send none of these.

The status word is read whole: FFmpeg 8.1 (the one PyAV bundles) copies each word of the first line
with ``get_word`` into ``buf1[MAX_URL_SIZE]``, 4,096 bytes like the line buffer itself, so no word of a
line FFmpeg keeps whole is cut (``RTSP/1.0 <1,100 zeros>302`` is a 302 to it). Older FFmpeg versions
had a 1,024-byte ``buf1`` and cut such a word; reading it whole refuses what either would follow.

Pure: knows nothing about sockets, threads or FFmpeg's API; standard library only.
"""

from __future__ import annotations

import re

MAX_LINE = 4095
"""Longest line FFmpeg keeps whole (its line buffer is 4,096 bytes with the NUL): longer ones are refused."""

MAX_BODY = 1 << 20
"""Largest message body passed on, in bytes (an SDP description is a few kB)."""

MIN_PACKET = 8
"""Smallest interleaved packet FFmpeg reads as a packet in every mode (RTCP's fixed header and SSRC)."""

_WORD_SPLIT = re.compile(rb"[ \t]+")
"""FFmpeg's ``get_word`` separators inside a line (SPACE_CHARS is " \\t\\r\\n"; \\r and \\n are gone)."""

_INT_BITS = 32


class Refused(Exception):
    """The server sent something FFmpeg could follow as a redirect, or could read differently from us."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        """The 3xx status of a refused redirect, or None."""


def c_atoi(word: bytes) -> int:
    """glibc's ``atoi``: ``(int) strtol(word, NULL, 10)`` (leading space, a sign, digits; clamped to the
    64-bit range, then cut to 32 bits)."""
    m = re.match(rb"[ \t\n\v\f\r]*([+-]?)([0-9]*)", word)
    assert m is not None  # the pattern matches the empty string
    value = int(m.group(2) or b"0")
    value = -value if m.group(1) == b"-" else value
    value = max(-(1 << 63), min(value, (1 << 63) - 1))
    value &= (1 << _INT_BITS) - 1
    return value - (1 << _INT_BITS) if value >> (_INT_BITS - 1) else value


def status_of(line: bytes) -> int | None:
    """The status FFmpeg reads from a message's first line (``ff_rtsp_read_reply``), or None when FFmpeg
    reads the line as a request from the server (its first word does not start with ``RTSP/``). The line
    is cut to the ``MAX_LINE`` bytes FFmpeg keeps (the guard refuses longer ones); its words are whole
    (see the module doc)."""
    words = _WORD_SPLIT.split(line[:MAX_LINE].strip(b" \t"), 2)
    if not words[0].startswith(b"RTSP/"):
        return None
    return c_atoi(words[1]) if len(words) > 1 else 0


class ReplyGuard:
    """Fed the server-to-client bytes of one RTSP connection in order (``feed``); raises ``Refused`` at the
    first chunk FFmpeg could act on as a redirect or could frame differently. Refusal is final: the
    caller closes the connection without passing that chunk on. Memory is bounded by one line."""

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self._line = bytearray()
        self._lines = 0  # lines of the current message read so far
        self._content_length = 0
        self._body = 0  # bytes of the current message's body still to pass over
        self._payload = 0  # bytes of the current interleaved packet still to pass over
        self._packet_header: bytearray | None = None  # the bytes after a '$', while fewer than 3
        self.messages = 0
        """Messages (replies and server requests) read whole."""
        self.packets = 0
        """Interleaved packets read whole."""

    def feed(self, data: bytes) -> None:
        """Read the next bytes; raise Refused when they must not reach FFmpeg (the caller then closes)."""
        i, n = 0, len(data)
        while i < n:
            if self._payload:
                step = min(self._payload, n - i)
                self._payload -= step
                i += step
            elif self._body:
                step = min(self._body, n - i)
                self._body -= step
                i += step
                if not self._body:
                    self._end_message()
            elif self._packet_header is not None:
                take = min(3 - len(self._packet_header), n - i)
                self._packet_header += data[i : i + take]
                i += take
                if len(self._packet_header) == 3:
                    self._start_payload()
            else:
                i = self._read_line(data, i)

    def _read_line(self, data: bytes, i: int) -> int:
        """Read line bytes from ``data[i:]`` up to and including a newline; return the index after them."""
        if not self._line:
            while i < len(data) and data[i] == 0x0D:  # '\r' is dropped, so a '$' after it is still first
                i += 1
            if i < len(data) and data[i] == 0x24:  # '$'
                if self._lines:
                    raise Refused("an RTSP header line starts with '$' (a packet inside a reply)")
                self._packet_header = bytearray()
                return i + 1
        end = data.find(b"\n", i)
        self._line += data[i : len(data) if end < 0 else end].replace(b"\r", b"")
        if len(self._line) > MAX_LINE:
            raise Refused(f"an RTSP line is longer than {MAX_LINE} bytes")
        if end < 0:
            return len(data)
        line, self._line = bytes(self._line), bytearray()
        self._on_line(line)
        return end + 1

    def _on_line(self, line: bytes) -> None:
        if b"\0" in line:
            raise Refused("an RTSP line holds a NUL byte")
        if not line:  # the end of the headers (an empty first line is an empty message)
            if self._content_length > 0:
                self._body = self._content_length
            else:
                self._end_message()
            return
        self._lines += 1
        if self._lines == 1:
            status = status_of(line)
            if status is not None and 300 <= status < 400:
                raise Refused(f"the server redirects (RTSP {status})", status)
            return
        if line[:9].lower() == b"location:":
            raise Refused("the server names another location (an RTSP Location header)")
        if line[:15].lower() == b"content-length:":
            value = line[15:].strip(b" \t")
            if not value.isdigit():
                raise Refused("an RTSP Content-Length is not a plain number")
            if int(value) > self.max_body:
                raise Refused(f"an RTSP message body is larger than {self.max_body} bytes")
            self._content_length = int(value)

    def _end_message(self) -> None:
        self.messages += 1
        self._lines, self._content_length = 0, 0

    def _start_payload(self) -> None:
        assert self._packet_header is not None
        length = int.from_bytes(self._packet_header[1:3], "big")
        if 0 < length < MIN_PACKET:
            raise Refused(f"an interleaved RTSP packet of {length} bytes (FFmpeg reads 8 or more)")
        self._packet_header = None
        self._payload = length
        self.packets += 1
