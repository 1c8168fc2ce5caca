"""The stream package stands alone: importing it pulls in no model, worker, API, torch, redis or web code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import stream.urls, stream.probe, stream.sampling, stream.av_input
import stream.live, stream.live_types, stream.timeline, stream.webrtc
banned = ("model", "workers", "api", "vidmem", "torch", "transformers", "redis", "celery",
          "fastapi", "starlette", "uvicorn", "httpx", "aiohttp", "flask")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned)
print(",".join(loaded))
"""


def test_stream_imports_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
