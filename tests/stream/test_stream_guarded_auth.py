"""Who the peer of a guarded http(s) URL is, and who we are to it: logins (``stream.http_auth``: no
credentials until asked, then Basic or Digest per RFC 7616, once) and the one TLS rule of https and rtsps
(``NetworkPolicy.verifies_tls``: certificates of public addresses verified, those of addresses the policy
had to allow, like a LAN camera's self-signed one, not), against loopback servers: an MP4 with its index
at the end and an MJPEG feed behind Basic and Digest logins, an https server and an rtsps camera with a
self-signed certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.av_input import open_video, resolve
from stream.errors import ForbiddenUrl, UnreachableSource
from stream.http_auth import Challenge, Login, choose, parse_challenges
from stream.live_check import check_live
from stream.live_types import LiveConfig
from stream.urls import NetworkPolicy
from tests.stream.clips import make_clip
from tests.stream.http_peers import PASSWORD, URL_PASSWORD, USER, Web, far_index, web_peer
from tests.stream.live_peers import RtspServer
from tests.stream.rtsp_peers import TlsFront, self_signed

pytestmark = pytest.mark.reliability

LOOPBACK = NetworkPolicy(allowed_networks=["127.0.0.0/8"], tls_hint="the TLS rule is TEST_TLS_SETTING")
LOGIN = f"{USER}:{URL_PASSWORD}"


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    far_index(make_clip(root / "late.mp4", seconds=4, fps=10, size=(160, 96), codec="libx264"))
    return root


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def _frames(url: str, policy: NetworkPolicy = LOOPBACK) -> int:
    source = resolve(url, allowed_schemes=("http", "https"), timeout_s=5.0, network_policy=policy)
    with open_video(source) as (container, stream):
        return sum(1 for _ in container.decode(stream))


# ---- logins ---------------------------------------------------------------------------------------------


def test_rfc7616_examples() -> None:
    """RFC 7616 section 3.9.1: the same request signed with SHA-256 and with MD5."""
    header = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    for algorithm, response in [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ]:
        [challenge] = parse_challenges([header.format(algorithm)])
        value = Login(challenge, "Mufasa", "Circle of Life", lambda: cnonce).authorization(
            "GET", "/dir/index.html"
        )
        assert f'response="{response}"' in value and "qop=auth, nc=00000001" in value, value
        assert 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"' in value


def test_the_strongest_challenge_is_chosen() -> None:
    offered = parse_challenges(
        [
            'Basic realm="a", Digest realm="a", nonce="n1", algorithm=MD5, qop="auth"',
            "Negotiate abc==",
            'Digest realm="a", nonce="n2", algorithm=SHA-256-sess, qop="auth"',
        ]
    )
    assert [c.scheme for c in offered] == ["basic", "digest", "negotiate", "abc", "digest"]
    assert choose(offered) == offered[4]
    assert choose(offered[:2]) == offered[1] and choose(offered[:1]) == offered[0]
    assert choose(parse_challenges(['Digest nonce="n", qop="auth-int"', "Negotiate x"])) is None
    with pytest.raises(ValueError, match="control characters"):
        Login(Challenge("basic"), "user\r\nX-Injected: 1", "pw")


@pytest.mark.parametrize("login", ["basic", "digest-md5", "digest-sha256"])
def test_an_mp4_and_an_mjpeg_feed_behind_a_login(www: Path, login: str) -> None:
    """The first request goes without credentials; the 401's challenge is answered on the same address,
    and later requests (the ranges of the MP4's index) are signed at once, with one 401 in all."""
    with web_peer(www, login=login) as peer:
        assert _frames(peer.url("late.mp4", LOGIN)) == 40
        assert peer.authorizations[0] is None and peer.refusals == 1, peer.authorizations
        assert all(a is not None for a in peer.authorizations[1:]) and len(peer.seen) >= 4, peer.seen
        scheme = "Basic" if login == "basic" else "Digest"
        assert all(a.startswith(scheme) for a in peer.authorizations[1:] if a is not None)
        config = LiveConfig(open_timeout_s=5, read_timeout_s=3, network_policy=LOOPBACK)
        info = check_live(peer.url("cam.mjpg", LOGIN), config)
        assert (info.width, info.height) == (160, 96)


def _refusal(url: str) -> str:
    with pytest.raises(UnreachableSource) as refused:
        _frames(url)
    return str(refused.value)


def test_a_refused_login_is_named_without_its_password(www: Path) -> None:
    with web_peer(www, login="digest-sha256") as peer:
        message = _refusal(peer.url("late.mp4", f"{USER}:wrong%2Dpassword"))
        assert "credentials were refused" in message and peer.refusals == 2, message
        assert "wrong" not in message
        message = _refusal(peer.url("late.mp4"))  # no credentials at all
        assert "HTTP 401" in message and "user:password@" in message, message
        message = _refusal(peer.url("late.mp4", LOGIN).replace("/late", "/missing"))
        assert "HTTP 404" in message
        for text in (PASSWORD, URL_PASSWORD):
            assert text not in message
    with web_peer(www, login="digest-md5") as peer, pytest.raises(ForbiddenUrl, match="control characters"):
        _frames(peer.url("late.mp4", "cam%0D%0AX-Injected:%201:pw"))


# ---- one TLS rule ---------------------------------------------------------------------------------------


def test_verify_tls_by_the_checked_address() -> None:
    public, lan = NetworkPolicy(), NetworkPolicy(allowed_networks=["192.168.0.0/16"])
    assert public.verifies_tls("8.8.8.8") and public.verifies_tls("2001:4860::8888")
    assert public.verifies_tls("::ffff:8.8.8.8") and not public.verifies_tls("::ffff:192.168.1.5")
    assert not lan.verifies_tls("192.168.1.5") and not lan.verifies_tls("127.0.0.1")
    assert NetworkPolicy(verify_tls="always").verifies_tls("192.168.1.5")
    assert not NetworkPolicy(verify_tls="never").verifies_tls("8.8.8.8")
    with pytest.raises(ValueError, match="verify_tls"):
        NetworkPolicy(verify_tls="sometimes")  # type: ignore[arg-type]


@pytest.fixture
def https_peer(www: Path, certificate: tuple[Path, Path]) -> Iterator[Web]:
    with web_peer(www, login="digest-sha256", certificate=certificate) as peer:
        yield peer


def test_a_self_signed_https_server_on_an_allowed_network(https_peer: Web) -> None:
    """ "public" (the default) takes the allowed loopback server's self-signed certificate, "always" refuses
    it and names the setting; the refusal comes before any request."""
    url = https_peer.url("late.mp4", LOGIN)
    assert _frames(url) == 40
    assert _frames(url, NetworkPolicy(allowed_networks=["127.0.0.0/8"], verify_tls="never")) == 40
    requests = len(https_peer.seen)
    always = NetworkPolicy(allowed_networks=["127.0.0.0/8"], verify_tls="always", tls_hint=LOOPBACK.tls_hint)
    with pytest.raises(
        UnreachableSource, match=r"certificate of .* was refused .*TEST_TLS_SETTING"
    ) as refused:
        _frames(url, always)
    assert "self-signed" in str(refused.value) and URL_PASSWORD not in str(refused.value)
    assert len(https_peer.seen) == requests


@pytest.mark.integration
def test_an_rtsps_camera_follows_the_same_rule(
    rtsp_server: RtspServer, certificate: tuple[Path, Path]
) -> None:
    with TlsFront("127.0.0.1", ("127.0.0.1", rtsp_server.port), certificate) as front:
        url = f"rtsps://127.0.0.1:{front.port}/test"
        rules = {
            rule: NetworkPolicy(["127.0.0.0/8"], verify_tls=rule, tls_hint="TEST_TLS")
            for rule in ("public", "always")
        }
        source = resolve(url, allowed_schemes=("rtsps",), timeout_s=5.0, network_policy=rules["public"])
        with open_video(source) as (container, stream):
            assert next(container.decode(stream)).width == 160
        source = resolve(url, allowed_schemes=("rtsps",), timeout_s=5.0, network_policy=rules["always"])
        with pytest.raises(UnreachableSource, match=r"certificate of .* was refused .*TEST_TLS"):
            open_video(source).__enter__()
