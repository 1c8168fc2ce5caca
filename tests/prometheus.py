"""The metrics tests' reading of an exposition, through ``prometheus_client.parser``.

``parse`` keys the families by the names a scrape shows (a counter by its ``_total`` name), and checks
what the library's lax parser lets through: every sample belongs to a family whose TYPE came first (the
parser makes an untyped family of any other), no series twice, and histograms with cumulative buckets
ending in ``le="+Inf"`` equal to ``_count``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

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


def parse(exposition: str | bytes) -> dict[str, Family]:
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    for m in text_string_to_metric_families(text):
        assert m.type != "unknown", f"samples of no declared family: {m.samples}"
        name = m.name + "_total" if m.type == "counter" else m.name
        assert name not in families, f"TYPE of {name} twice"
        fam = families[name] = Family(name, m.type, m.documentation)
        for s in m.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in fam.samples, f"sample twice: {s}"
            fam.samples[key] = s.value
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def expose(families: Iterable[Metric]) -> str:
    """``families`` written as a scrape writes them (a fresh registry, ``generate_latest``)."""

    class _Given:
        def collect(self) -> Iterable[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Given())
    return generate_latest(registry).decode()


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
