"""Figures of the reliability suite: numbers the tests measure (requests made, faults injected, frames
checked, 5xx answers, times), gathered per test and written as one JSON file at the end of the session.

Tests assert their own conditions; figures are only recorded, for the report and for comparing runs.
Knows nothing about vidmem.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

Number = int | float


class Figures:
    """All tests' figures: test name -> {figure: value}."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def of(self, test: str) -> TestFigures:
        return TestFigures(self.tests.setdefault(test, {}))

    def to_json(self) -> str:
        return json.dumps({"tests": self.tests}, indent=2, sort_keys=True)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")

    def table(self) -> list[str]:
        """One line per figure: ``test  figure  value``."""
        rows = [(t, k, _fmt(v)) for t, figs in sorted(self.tests.items()) for k, v in sorted(figs.items())]
        if not rows:
            return []
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return [f"{t:<{w0}}  {k:<{w1}}  {v}" for t, k, v in rows]


class TestFigures:
    """One test's figures. ``set`` a value, ``add`` to a count; ``http_hook`` counts every response."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.statuses: Counter[int] = Counter()

    def set(self, **values: Number | str | list[Any] | dict[str, Any]) -> None:
        self.values.update(values)

    def add(self, name: str, n: Number = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n

    def http_hook(self, response: httpx.Response) -> None:
        """httpx response hook: counts requests, answers by status, and 5xx."""
        self.statuses[response.status_code] += 1
        self.add("requests")
        if response.status_code >= 500:
            self.add("http_5xx")
        self.values["http_statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return str(v)
