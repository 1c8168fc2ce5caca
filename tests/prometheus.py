"""A strict reader of Prometheus' text exposition format (0.0.4), for the metrics tests.

Every line must be ``# HELP``, ``# TYPE`` or a sample of a family whose TYPE came first; label values are
unescaped; histograms must have cumulative buckets ending in ``le="+Inf"`` equal to ``_count``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP = re.compile(rf"# HELP ({NAME}) (.*)")
_TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)")
_SAMPLE = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}

Labels = frozenset[tuple[str, str]]


@dataclass
class Family:
    name: str
    type: str
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, frozenset(labels.items()))]

    def series(self, suffix: str = "") -> dict[Labels, float]:
        return {lab: v for (n, lab), v in self.samples.items() if n == self.name + suffix}


def _labels(text: str) -> Labels:
    out, pos = [], 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad labels: {text!r}"
        value = re.sub(r"\\(.)", lambda g: "\n" if g.group(1) == "n" else g.group(1), m.group(2))
        out.append((m.group(1), value))
        pos = m.end()
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), f"repeated label in {text!r}"
    return frozenset(out)


def _family_of(name: str, families: dict[str, Family]) -> Family:
    for f in families.values():
        if name in (f.name + s for s in _SUFFIXES.get(f.type, ("",))):
            return f
    raise AssertionError(f"sample {name} before its TYPE line")


def parse(text: str) -> dict[str, Family]:
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if m := _HELP.fullmatch(line):
            helps[m.group(1)] = m.group(2)
        elif m := _TYPE.fullmatch(line):
            assert m.group(1) not in families, f"TYPE of {m.group(1)} twice"
            families[m.group(1)] = Family(m.group(1), m.group(2), helps.get(m.group(1), ""))
        elif m := _SAMPLE.fullmatch(line):
            fam = _family_of(m.group(1), families)
            key = (m.group(1), _labels(m.group(2) or ""))
            assert key not in fam.samples, f"sample twice: {line}"
            fam.samples[key] = float(m.group(3))  # also +Inf, NaN
        else:
            raise AssertionError(f"not a line of the text format: {line!r}")
    for f in families.values():
        if f.type == "histogram":
            _check_histogram(f)
    return families


def _check_histogram(f: Family) -> None:
    counts = f.series("_count")
    assert set(counts) == set(f.series("_sum")), f"{f.name}: _sum and _count series differ"
    for labels, count in counts.items():
        buckets = sorted(
            (float(dict(lab)["le"]), v)
            for lab, v in f.series("_bucket").items()
            if lab - {("le", dict(lab)["le"])} == labels
        )
        assert buckets and math.isinf(buckets[-1][0]), f"{f.name}{set(labels)}: no +Inf bucket"
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{f.name}{set(labels)}: buckets not cumulative: {values}"
        assert values[-1] == count, f"{f.name}{set(labels)}: +Inf bucket {values[-1]} != count {count}"
