"""The ``vidmem`` command, run as a user would: a fresh process, offline, embedded mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TESTDATA
from tests.stream.clips import make_clip

pytestmark = pytest.mark.slow


def vidmem(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("VIDMEM_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "vidmem.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ask_prints_one_json_object_within_budget(tmp_path: Path) -> None:
    real = TESTDATA / "slow_traffic_small.mp4"
    clip = real if real.exists() else make_clip(tmp_path / "c.mp4", seconds=10, fps=25, size=(160, 120))
    out = vidmem(["ask", str(clip), "What is on the road?", "--model", "tiny", "--budget", "300",
                  "--max-new-tokens", "8", "--json"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert set(res) >= {"answer", "tokens_used", "budget", "slots_used", "latency_s", "ttft_s"}
    assert res["budget"] == 300 and 0 < res["tokens_used"] <= 300
    assert res["frames"] >= 10 and 0 < res["slots_used"] <= res["frames"]
    assert 0 < res["ttft_s"] <= res["latency_s"]


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-dynamic-vlm"])
def test_ask_with_every_tiny_backend(model: str, tmp_path: Path) -> None:
    """Each family's tiny preset is built offline on first use and answers within its budget (its own
    default budget: none is given)."""
    clip = make_clip(tmp_path / "c.mp4", seconds=6, fps=25, size=(160, 120))
    out = vidmem(["ask", str(clip), "What is on the road?", "--model", model, "--max-new-tokens", "4",
                  "--json"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["budget"] == 2048 and 0 < res["tokens_used"] <= res["budget"]
    assert res["frames"] == 6 and res["slots_used"] == 6


def test_ask_refuses_a_non_video_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 10)
    out = vidmem(["ask", str(bad), "?", "--model", "tiny"], tmp_path)
    assert out.returncode == 2
    assert "not_a_video" in out.stderr and "Traceback" not in out.stderr
    out = vidmem(["ask", "file:///etc/passwd", "?", "--model", "tiny"], tmp_path)
    assert out.returncode == 2 and "forbidden_url" in out.stderr


def test_ingest_and_worker_need_a_redis_url(tmp_path: Path) -> None:
    """The distributed-mode processes refuse to start without Redis, saying what is missing."""
    for cmd in (["ingest"], ["worker", "--queues", "encode"]):
        out = vidmem(cmd, tmp_path)
        assert out.returncode == 2 and "--redis-url" in out.stderr and "Traceback" not in out.stderr
