"""What the ``vidmem`` command writes to a terminal: safe text, redacted messages, and stage progress.

Knows nothing about jobs, models or settings: the command passes plain numbers and strings in.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import TextIO

from stream.urls import redact

_KEPT = frozenset("\n\t")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Bidirectional embedding, override and isolate controls: they reorder what a terminal shows."""


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` made safe for a terminal: control characters (ESC, CR, backspace, C1, DEL...) and bidi
    controls are escaped as ``\\xNN`` / ``\\uNNNN``, newline and tab are kept, and lone surrogates (text
    that is not valid Unicode) become U+FFFD, so that the result always encodes as UTF-8."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in _KEPT) or _BIDI.match(ch):
            out.append(_escape(ch))
        elif cat == "Cs":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def say(message: str, file: TextIO | None = None) -> None:
    """One ``vidmem: ...`` line on stderr, credentials redacted and control characters escaped."""
    print(f"vidmem: {printable(redact(message))}", file=file or sys.stderr, flush=True)


def bar(done: int, total: int, width: int = 30) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    fill = round(frac * width)
    return f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%"


def ingest_progress(expected: int | None, sampled: int, sampling_done: bool, encoded: int) -> str:
    """One line of an ingest's progress, with only the counts known so far.

    While the video is read: frames sampled (of about ``expected``, the duration times the rate, when
    the container says its duration) and encoded. Once every frame is sampled: a bar of encoded/sampled.
    """
    if sampling_done:
        return f"encoding {bar(encoded, sampled)} {encoded}/{sampled} frames"
    if sampled == 0:
        return "sampling..."
    of = f" of ~{expected}" if expected and expected >= sampled else ""
    return f"sampling {sampled}{of} frames, {encoded} encoded"


class Progress:
    """Stage lines on stderr. On a terminal: one line, rewritten in place. Elsewhere (a log, a pipe): a
    line each time the stage (the first word) changes, and the final state at ``end``. Quiet: nothing."""

    def __init__(self, file: TextIO, quiet: bool = False) -> None:
        self.file = file
        self.quiet = quiet
        self.tty = file.isatty()
        self._current = ""  # the state shown last (terminal) or known last (elsewhere)
        self._printed = ""  # elsewhere: the last line printed

    def update(self, text: str) -> None:
        if self.quiet or text == self._current:
            return
        self._current = text
        if self.tty:
            print(f"\r{text}\x1b[K", end="", file=self.file, flush=True)
        elif _stage(text) != _stage(self._printed):
            self._print(text)

    def end(self, text: str | None = None) -> None:
        """Finish the current line, with ``text`` as its final state (default: the last update)."""
        final = text if text is not None else self._current
        if not self.quiet and final:
            if self.tty:
                print(f"\r{final}\x1b[K", file=self.file, flush=True)
            elif final != self._printed:
                self._print(final)
        self._current = self._printed = ""

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)
        self._printed = text


def _stage(text: str) -> str:
    return text.split(" ", 1)[0].rstrip(".:")
