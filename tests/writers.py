"""Run memory appends from several threads, each with its own client; re-raise what any of them hit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from model.memory import TokenMemory
from model.slots import EncodedFrame


def append_concurrently(
    client: Callable[[], TokenMemory],
    sid: str,
    batches: Sequence[Sequence[int]],
    frame: Callable[[int], EncodedFrame],
    workers: int,
) -> None:
    """Deal ``batches`` of frame seqs round-robin to ``workers`` threads and append them."""
    errors: list[BaseException] = []

    def run(part: Sequence[Sequence[int]]) -> None:
        mem = client()
        try:
            for batch in part:
                mem.append(sid, [frame(q) for q in batch])
        except BaseException as e:  # surfaced in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(batches[k::workers],)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
