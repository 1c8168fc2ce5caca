"""Values as redis-py returns them (bytes, or str with ``decode_responses``), read as text."""

from __future__ import annotations

from typing import Any


def text(v: Any) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return v.decode() if isinstance(v, bytes) else str(v)


PREFIX = "vm"
"""The prefix of every key vidmem keeps in Redis: the stores' default, from this one place."""
