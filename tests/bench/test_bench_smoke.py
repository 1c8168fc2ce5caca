"""CI smoke of ``python -m bench memory --size tiny``: it runs end to end and reports every key.

Timings are not asserted here (they belong to bench/, on a quiet machine); the token and byte
accounting is deterministic and is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_memory_bench_tiny_reports_every_key(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "memory", "--size", "tiny", "--json", "--repeats", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin", "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("answer_time_ratio_24h_1min", "redis_bytes_ratio_24h_1h", "ingest_ratio", "sampling_ratio"):
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    for h in ("1min", "1h", "24h"):
        assert res[f"tokens_used_{h}"] <= res["budget"]
    assert res["frames_covered_24h"] == 86_400
    assert res["redis_bytes_ratio_24h_1h"] <= 1.1  # bounded storage: a day costs what an hour does
    # dtype auto and the tiny preset's own memory defaults, recorded with the CPU they ran on
    assert res["dtype_requested"] == "auto" and res["dtype"] in ("float32", "bfloat16")
    assert res["cpu"] == res["summary"]["cpu"] and "native bf16" in res["cpu"]
    assert (res["budget"], res["budget_source"], res["min_side"]) == (2048, "the model's default", 1)
    for h in ("1min", "1h", "24h"):
        assert 0 < res[f"label_share_{h}"] == res["summary"][f"label_share_{h}"] < 1
        assert res[f"label_tokens_{h}"] == res[f"accounted_label_tokens_{h}"]


def test_webrtc_bench_reports_latency_from_a_real_browser(tmp_path) -> None:
    """``python -m bench webrtc``, short: Chromium's camera reaches the memory at the size it was sent."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "webrtc", "--json", "--sizes", "640x360", "--warmup", "3",
         "--seconds", "4", "--fps", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    (step,) = res["steps"]
    assert step["received"] == "640x360", step
    assert step["frames"] >= 4 and step["state"] == "live", step
    assert 0 < step["latency_p50_s"] <= step["latency_p95_s"], step
