"""Runtime.url_policy: private networks (cameras) reachable by default in embedded mode only; the operator's
url_allowed_networks wins in both modes; refusals name the setting; the one-shot ask has no policy.

tests/conftest.py sets VIDMEM_URL_ALLOWED_NETWORKS (loopback) for the whole session: every test here sets
or clears it explicitly.
"""

from __future__ import annotations

import pytest

from core.settings import Settings
from stream.errors import ForbiddenUrl
from stream.urls import check_network
from workers.runtime import Runtime

PRIVATE = ["192.168.1.64", "10.1.2.3", "172.16.0.9", "fd00::1"]
NEVER = ["127.0.0.1", "::1", "169.254.169.254", "fe80::1", "100.100.100.200", "0.0.0.0", "224.0.0.1"]


@pytest.fixture(autouse=True)
def _no_session_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDMEM_URL_ALLOWED_NETWORKS", raising=False)
    monkeypatch.delenv("VIDMEM_URL_BLOCKED_NETWORKS", raising=False)


def test_embedded_mode_reaches_private_cameras_but_never_local_or_metadata() -> None:
    p = Runtime.create(Settings(redis_url=None)).url_policy()
    assert p is not None
    assert [a for a in PRIVATE if p.refusal(a) is not None] == []
    assert [a for a in NEVER if p.refusal(a) is None] == []
    assert p.refusal("::ffff:192.168.1.64") is None  # IPv4-mapped: judged by the IPv4 address
    assert p.refusal("::ffff:127.0.0.1") == "loopback"


def test_distributed_mode_keeps_nothing_beyond_public_by_default() -> None:
    p = Runtime.create(Settings(redis_url="redis://127.0.0.1:1/0")).url_policy()
    assert p is not None
    assert [a for a in PRIVATE if p.refusal(a) is None] == []
    assert p.refusal("8.8.8.8") is None


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:1/0"])
def test_the_operators_networks_win_in_both_modes(
    redis_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Runtime.create(Settings(redis_url=redis_url, url_allowed_networks=[])).url_policy()
    assert p is not None and p.refusal("192.168.1.64") == "private"  # explicit []: nothing, even embedded
    monkeypatch.setenv("VIDMEM_URL_ALLOWED_NETWORKS", '["10.9.0.0/16"]')
    p = Runtime.create(Settings(redis_url=redis_url)).url_policy()
    assert p is not None
    assert p.refusal("10.9.1.1") is None and p.refusal("192.168.1.64") == "private"
    p = Runtime.create(Settings(redis_url=redis_url, url_blocked_networks=["10.9.1.0/24"])).url_policy()
    assert p is not None and p.refusal("10.9.1.1") == "in a blocked network"


def test_a_refusal_names_the_setting_that_lifts_it() -> None:
    p = Runtime.create(Settings(redis_url="redis://127.0.0.1:1/0", url_blocked_networks=["10.0.0.0/8"]))
    with pytest.raises(ForbiddenUrl, match=r"private; .*VIDMEM_URL_ALLOWED_NETWORKS.*192\.168\.1\.0/24"):
        check_network("rtsp://192.168.1.64/stream1", p.url_policy())  # type: ignore[arg-type]
    with pytest.raises(ForbiddenUrl) as blocked:  # a blocked network is the operator's no: no hint
        check_network("rtsp://10.1.2.3/stream1", p.url_policy())  # type: ignore[arg-type]
    assert "blocked" in str(blocked.value) and "VIDMEM_URL_ALLOWED_NETWORKS" not in str(blocked.value)


def test_the_one_shot_ask_has_no_network_policy() -> None:
    assert Runtime.create(Settings(redis_url=None), trusted_urls=True).url_policy() is None


def test_the_tls_rule_comes_from_the_setting_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Runtime.create(Settings(redis_url=None)).url_policy()
    assert p is not None and p.verify_tls == "public" and "VIDMEM_URL_VERIFY_TLS" in p.tls_hint
    assert p.verifies_tls("8.8.8.8") and not p.verifies_tls("192.168.1.64")
    monkeypatch.setenv("VIDMEM_URL_VERIFY_TLS", "always")
    p = Runtime.create(Settings(redis_url=None)).url_policy()
    assert p is not None and p.verify_tls == "always" and p.verifies_tls("192.168.1.64")
