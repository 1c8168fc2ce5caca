"""vidmem.console: generated text reaches the terminal without its control characters, progress says only
what is known, and stage lines suit both a terminal and a log."""

from __future__ import annotations

import io

from vidmem.console import Progress, ingest_progress, printable, say


def test_control_characters_are_escaped_and_the_text_stays_utf8() -> None:
    hostile = "ok\x1b[2J\x1b]0;pwned\x07 back\x08\rover\x9b31m\x7f \u202egnp.exe\ud800 \u00e9\u6f22\n\tend"
    shown = printable(hostile)
    assert shown == (
        "ok\\x1b[2J\\x1b]0;pwned\\x07 back\\x08\\x0dover\\x9b31m\\x7f "
        "\\u202egnp.exe\ufffd \u00e9\u6f22\n\tend"
    )
    shown.encode("utf-8")  # lone surrogates replaced: always encodable
    assert printable("plain text, 123. \u00fcber \U0001f600") == "plain text, 123. \u00fcber \U0001f600"


def test_say_redacts_and_escapes() -> None:
    buf = io.StringIO()
    say("cannot reach redis://:secret@10.0.0.5:6379/0\x1b[31m", file=buf)
    assert buf.getvalue() == "vidmem: cannot reach redis://***@10.0.0.5:6379/0\\x1b[31m\n"


def test_ingest_progress_never_shows_a_total_it_does_not_know() -> None:
    assert ingest_progress(None, 0, False, 0) == "sampling..."
    assert ingest_progress(60, 0, False, 0) == "sampling..."
    assert ingest_progress(60, 16, False, 8) == "sampling 16 of ~60 frames, 8 encoded"
    assert ingest_progress(None, 16, False, 8) == "sampling 16 frames, 8 encoded"
    assert ingest_progress(10, 16, False, 8) == "sampling 16 frames, 8 encoded"  # the estimate was short
    line = ingest_progress(60, 58, True, 29)
    assert line.startswith("encoding [") and line.endswith(" 50.0% 29/58 frames")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_prints_stage_changes_elsewhere() -> None:
    tty, log = _Tty(), io.StringIO()
    for out in (tty, log):
        p = Progress(out)
        for text in ("sampling...", "sampling 8 frames, 0 encoded", "encoding [#] 8/16 frames",
                     "encoding [##] 16/16 frames"):  # fmt: skip
            p.update(text)
        p.end()
        p.end("answering...")
    assert tty.getvalue().count("\r") == 6 and tty.getvalue().endswith("\ranswering...\x1b[K\n")
    assert log.getvalue().splitlines() == [
        "sampling...",
        "encoding [#] 8/16 frames",
        "encoding [##] 16/16 frames",
        "answering...",
    ]
    quiet = io.StringIO()
    q = Progress(quiet, quiet=True)
    q.update("sampling...")
    q.end("answering...")
    assert quiet.getvalue() == ""
