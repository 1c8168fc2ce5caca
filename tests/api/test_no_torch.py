"""The API process never imports torch (models live in the workers), proven in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, RedisServer


@pytest.mark.integration
def test_api_process_serves_without_importing_torch(redis_server: RedisServer, tmp_path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from api.main import create_app
        from core.settings import Settings

        app = create_app(Settings(redis_url={redis_server.url!r}, upload_dir={str(tmp_path)!r}))
        c = TestClient(app)
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/streams").status_code == 401  # distributed mode: keys
        from workers.tenants import ApiKeys
        c.headers["Authorization"] = "Bearer " + ApiKeys(app.state.runtime.redis).create("t")[1]
        assert c.get("/v1/streams").status_code == 200
        r = c.post("/v1/videos", files={{"file": ("x.mp4", b"not a video", "video/mp4")}})
        assert r.status_code == 415, r.text
        r = c.post("/v1/videos", json={{"url": "file:///etc/passwd"}})
        assert r.status_code == 400, r.text
        assert "torch" not in sys.modules, "the API imported torch"
        assert "transformers" not in sys.modules, "the API imported transformers"
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
