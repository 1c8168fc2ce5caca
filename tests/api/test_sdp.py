"""``api.sdp``: which offers can become a stream (``check_offer``), and the bitrate hints added to answers
(``with_bitrate_hints``). Pure functions over SDP text: hand-written SDP, and real offers and answers made
by aiortc (no network: candidates are gathered, nothing connects)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from api.sdp import OfferInfo, Screened, SdpError, check_offer, screen_candidates, with_bitrate_hints
from stream.urls import NetworkPolicy

HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
ICE = (
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=rtcp-mux\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)
"""How to connect and secure a section: ICE credentials, a DTLS fingerprint and role (every section needs
them, or the offer is bad_sdp)."""
HINT = "x-google-start-bitrate=2500;x-google-min-bitrate=800;x-google-max-bitrate=6000"


def video(formats: str, *lines: str, port: int = 9, direction: str | None = "sendonly") -> str:
    """A video section offering ``formats`` ("96 VP8/90000, 97 H264/90000")."""
    pts = [f.split()[0] for f in formats.split(", ")]
    out = f"m=video {port} UDP/TLS/RTP/SAVPF {' '.join(pts)}\r\nc=IN IP4 0.0.0.0\r\n{ICE}"
    if direction is not None:
        out += f"a={direction}\r\n"
    out += "".join(f"a=rtpmap:{f}\r\n" for f in formats.split(", "))
    return out + "".join(f"{line}\r\n" for line in lines)


def h264_fmtp(pt: int) -> str:
    """The parameters aiortc needs to negotiate H.264 (packetization-mode 1, constrained baseline): an
    H.264 format without them cannot be used (RFC 6184: mode 0 by default) and is unsupported_codec."""
    return f"a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"


def audio(direction: str = "sendonly") -> str:
    return (
        f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n{ICE}a={direction}\r\n"
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    )


def refused(sdp: str) -> SdpError:
    with pytest.raises(SdpError) as info:
        check_offer(sdp)
    return info.value


async def _aiortc_offer_and_answer() -> tuple[str, str]:
    """A real aiortc offer (video sendonly, audio sendrecv) and aiortc's answer to it."""
    client, server = RTCPeerConnection(), RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="sendonly")
        client.addTransceiver("audio", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await server.setLocalDescription(await server.createAnswer())
        return offer, server.localDescription.sdp
    finally:
        await client.close()
        await server.close()


@pytest.fixture(scope="module")
def aiortc_sdp() -> tuple[str, str]:
    return asyncio.run(_aiortc_offer_and_answer())


# ---- check_offer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "   \r\n",
        "hello",
        "V=0\r\n",
        "v=1\r\n" + video("96 VP8/90000"),
        "o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n",
    ],
    ids=["empty", "blank", "text", "uppercase-v", "version-1", "v-not-first"],
)
def test_not_sdp_is_bad_sdp(sdp: str) -> None:
    err = refused(sdp)
    assert err.code == "bad_sdp" and "v=0" in str(err)


@pytest.mark.parametrize(
    "sdp",
    [
        HEAD + "m=video notaport UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
        HEAD + "m=video\r\n",
        HEAD + video("96 VP8/90000").replace("a=rtpmap:96", "a=rtpmap:xx"),
        HEAD + video("96 VP8/90000", "a=setup:sometimes"),
        HEAD + video("96 VP8/90000", "a=ssrc:12 nocolon"),
        HEAD + video("96 VP8/90000", "a=fmtp:zz x=1"),
        HEAD + video("96 VP8/90000", "a=candidate:1 1 udp"),
        HEAD + video("96 VP8/90000").replace("VP8/90000", "VP8"),
        "v=0\r\n\x00\xff garbage \x01\r\nm=\r\n",
    ],
    ids=["port", "short-m", "rtpmap-pt", "setup", "ssrc", "fmtp-pt", "candidate", "no-clock", "binary"],
)
def test_lines_aiortc_cannot_parse_are_bad_sdp(sdp: str) -> None:
    err = refused(sdp)
    assert err.code == "bad_sdp"
    assert str(err).startswith("malformed SDP"), err


def test_bad_sdp_message_says_something() -> None:
    """aiortc's parser raises bare ``AssertionError()`` for many malformed lines: the message must still
    explain something (check_offer means to fall back to "unparsable line")."""
    err = refused(HEAD + "m=video notaport UDP/TLS/RTP/SAVPF 96\r\n")
    assert err.code == "bad_sdp"
    assert not re.search(r":\s*\)\s*$", str(err)), f"empty explanation: {str(err)!r}"


@pytest.mark.parametrize(
    ("sdp", "kinds"),
    [
        (HEAD, "no media"),
        (HEAD + audio(), "audio"),
        (HEAD + audio("sendrecv"), "audio"),
        (HEAD + video("96 VP8/90000", direction="recvonly") + audio(), "audio, video"),
        (HEAD + video("96 VP8/90000", direction="inactive"), "video"),
        (HEAD + video("96 VP8/90000", port=0), "video"),
        (HEAD + video("96 VP8/90000", port=0, direction=None) + audio(), "audio, video"),
    ],
    ids=[
        "no-media",
        "audio-only",
        "audio-sendrecv",
        "video-recvonly",
        "video-inactive",
        "port-0",
        "port-0-sendrecv",
    ],
)
def test_offer_sending_no_video_is_no_video(sdp: str, kinds: str) -> None:
    err = refused(sdp)
    assert err.code == "no_video"
    assert f"(it has: {kinds})" in str(err), err


@pytest.mark.parametrize(
    ("formats", "shown"),
    [
        ("98 VP9/90000", "VP9"),
        ("45 AV1/90000", "AV1"),
        ("98 VP9/90000, 99 rtx/90000, 45 AV1/90000", "VP9, rtx, AV1"),
    ],
)
def test_video_in_other_codecs_is_unsupported_codec(formats: str, shown: str) -> None:
    err = refused(HEAD + video(formats) + audio())
    assert err.code == "unsupported_codec"
    assert f"({shown})" in str(err) and "VP8" in str(err) and "H264" in str(err), err


def test_unsupported_codec_only_counts_sending_video_sections() -> None:
    """VP8 offered in a recvonly video section does not make a VP9-only sending section acceptable."""
    sdp = HEAD + video("96 VP8/90000", direction="recvonly") + video("98 VP9/90000")
    assert refused(sdp).code == "unsupported_codec"


@pytest.mark.parametrize(
    ("sdp", "codecs", "has_audio"),
    [
        (HEAD + video("96 VP8/90000"), ("video/VP8",), False),
        (HEAD + video("96 VP8/90000", direction=None), ("video/VP8",), False),  # sendrecv by default
        (HEAD + video("96 VP8/90000", direction="sendrecv"), ("video/VP8",), False),
        (
            HEAD + video("98 VP9/90000, 102 H264/90000, 96 VP8/90000", h264_fmtp(102)) + audio(),
            ("video/H264", "video/VP8"),
            True,
        ),
        (
            HEAD
            + audio("recvonly")
            + video("102 H264/90000, 103 H264/90000", h264_fmtp(102), h264_fmtp(103)),
            ("video/H264",),
            True,
        ),
        ("\r\n  " + HEAD + video("96 VP8/90000"), ("video/VP8",), False),  # leading blank space
        ((HEAD + video("96 VP8/90000")).replace("\r\n", "\n"), ("video/VP8",), False),  # LF only
    ],
    ids=["vp8", "sendrecv-default", "sendrecv", "mixed", "h264-twice", "leading-space", "lf"],
)
def test_acceptable_offers(sdp: str, codecs: tuple[str, ...], has_audio: bool) -> None:
    assert check_offer(sdp) == OfferInfo(video_codecs=codecs, has_audio=has_audio)


def test_codec_names_are_case_insensitive() -> None:
    """SDP encoding names are case-insensitive (RFC 4855 §3), and so is aiortc's negotiation: an offer
    naming its codec "vp8" is one aiortc decodes, not an unsupported codec."""
    assert check_offer(HEAD + video("96 vp8/90000")).video_codecs
    assert check_offer(HEAD + video("102 h264/90000", h264_fmtp(102))).video_codecs


def test_real_aiortc_offer(aiortc_sdp: tuple[str, str]) -> None:
    offer, _ = aiortc_sdp
    assert check_offer(offer) == OfferInfo(video_codecs=("video/VP8", "video/H264"), has_audio=True)
    assert refused(offer.replace("a=sendonly", "a=inactive")).code == "no_video"
    assert refused(offer.replace("a=sendonly", "a=recvonly")).code == "no_video"


# ---- with_bitrate_hints --------------------------------------------------------------------------


def fmtps(sdp: str) -> dict[str, str]:
    return dict(re.findall(r"^a=fmtp:(\d+) (.*?)\r?$", sdp, flags=re.MULTILINE))


def sections(sdp: str) -> list[str]:
    return re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)


def test_hints_on_every_vp8_and_h264_format_of_a_real_answer(aiortc_sdp: tuple[str, str]) -> None:
    _, answer = aiortc_sdp
    out = with_bitrate_hints(answer, start_kbps=2500, min_kbps=800, max_kbps=6000)
    desc = SessionDescription.parse(out)
    (vid,) = [m for m in desc.media if m.kind == "video"]
    decodable = [c for c in vid.rtp.codecs if c.mimeType in ("video/VP8", "video/H264")]
    assert {c.mimeType for c in decodable} == {"video/VP8", "video/H264"}
    for c in decodable:
        hints = {k: str(v) for k, v in c.parameters.items() if k.startswith("x-google")}
        assert hints == {"x-google-start-bitrate": "2500", "x-google-min-bitrate": "800",
                         "x-google-max-bitrate": "6000"}, c  # fmt: skip
    # Existing fmtp lines were extended, not replaced (H.264 keeps its profile), and none doubled.
    before, after = fmtps(answer), fmtps(out)
    for c in decodable:
        pt = str(c.payloadType)
        if pt in before:
            assert after[pt] == f"{before[pt]};{HINT}"
        else:
            assert after[pt] == HINT
        assert len(re.findall(rf"^a=fmtp:{pt} ", out, flags=re.MULTILINE)) == 1
    # rtx formats, the audio section and the session part are untouched.
    rtx = [str(c.payloadType) for c in vid.rtp.codecs if c.mimeType == "video/rtx"]
    assert rtx and all(after[pt] == before[pt] and "x-google" not in after[pt] for pt in rtx)
    old, new = sections(answer), sections(out)
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        if not a.startswith("m=video"):
            assert a == b
    # Line endings: CRLF everywhere, one line added per VP8/H264 format that had no fmtp.
    assert "\n" not in out.replace("\r\n", "")
    added = sum(str(c.payloadType) not in before for c in decodable)
    assert out.count("\r\n") == answer.count("\r\n") + added


def test_missing_fmtp_is_added_right_after_its_rtpmap() -> None:
    formats = "96 VP8/90000, 97 rtx/90000, 102 H264/90000, 98 VP9/90000"
    fmtp = (
        "a=fmtp:97 apt=96",
        "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f",
        "a=fmtp:98 profile-id=0",
    )
    sdp = HEAD + video(formats, *fmtp) + audio()
    out = with_bitrate_hints(sdp, start_kbps=1000, min_kbps=100, max_kbps=3000)
    hint = "x-google-start-bitrate=1000;x-google-min-bitrate=100;x-google-max-bitrate=3000"
    lines = out.split("\r\n")
    i = lines.index("a=rtpmap:96 VP8/90000")
    assert lines[i + 1] == f"a=fmtp:96 {hint}"
    assert f"a=fmtp:102 packetization-mode=1;profile-level-id=42e01f;{hint}" in lines
    assert "a=fmtp:97 apt=96" in lines and "a=fmtp:98 profile-id=0" in lines
    assert "a=rtpmap:98 VP9/90000" in lines  # not a format aiortc decodes: no hint
    assert [line for line in lines if line.startswith("a=fmtp:98 ")] == ["a=fmtp:98 profile-id=0"]
    assert sections(out)[-1] == sections(sdp)[-1]  # audio untouched
    assert out.count("x-google-start-bitrate") == 2


def test_hints_keep_lf_line_endings_and_every_video_section() -> None:
    sdp = (HEAD + video("96 VP8/90000") + audio() + video("102 h264/90000", direction="recvonly")).replace(
        "\r\n", "\n"
    )
    out = with_bitrate_hints(sdp, start_kbps=2500, min_kbps=800, max_kbps=6000)
    assert "\r" not in out
    assert f"a=rtpmap:96 VP8/90000\na=fmtp:96 {HINT}\n" in out
    assert f"a=rtpmap:102 h264/90000\na=fmtp:102 {HINT}\n" in out
    assert sections(out)[2] == sections(sdp)[2]  # audio
    assert out.replace(f"a=fmtp:96 {HINT}\n", "").replace(f"a=fmtp:102 {HINT}\n", "") == sdp


def test_no_video_formats_no_change() -> None:
    sdp = HEAD + video("98 VP9/90000", "a=fmtp:98 profile-id=0") + audio()
    assert with_bitrate_hints(sdp, start_kbps=2500, min_kbps=800, max_kbps=6000) == sdp


def test_fingerprint_in_an_algorithm_aiortc_cannot_check_is_bad_sdp() -> None:
    sdp = HEAD + video("96 VP8/90000")
    sdp = sdp.replace("a=fingerprint:sha-256 ", "a=fingerprint:md5 ")
    err = refused(sdp)
    assert err.code == "bad_sdp" and "md5" in str(err), err


# ---- screen_candidates ---------------------------------------------------------------------------

DEFAULT_POLICY = NetworkPolicy()  # public addresses only
OPEN_POLICY = NetworkPolicy(allowed_networks=("0.0.0.0/0", "::/0"))


def with_candidates(*candidates: str, end: bool = True) -> str:
    lines = "".join(f"a=candidate:{c}\r\n" for c in candidates)
    return HEAD + video("96 VP8/90000") + lines + ("a=end-of-candidates\r\n" if end else "")


def screened(*candidates: str, policy: NetworkPolicy = DEFAULT_POLICY, most: int = 32) -> Screened:
    return screen_candidates(with_candidates(*candidates), policy, max_candidates=most)


def screen_refused(*candidates: str, most: int = 32) -> str:
    with pytest.raises(SdpError) as info:
        screened(*candidates, most=most)
    assert info.value.code == "bad_sdp"
    return str(info.value)


PUBLIC = "1 1 udp 2130706431 203.0.113.7 5000 typ host"  # (a documentation range: allowed by OPEN only)
GLOBAL = "1 1 udp 1694498815 93.184.215.14 40000 typ srflx raddr 0.0.0.0 rport 0"


def test_public_candidates_are_kept_as_they_are() -> None:
    tcp = "2 1 tcp 1518280447 93.184.215.14 9 typ host tcptype active"  # port 9: TCP active (RFC 6544)
    v6 = "3 1 UDP 2122262783 2606:4700::6810:84e5 40001 typ host generation 0"
    out = screened(GLOBAL, tcp, v6)
    assert out.sdp == with_candidates(GLOBAL, tcp, v6) and out.kept == 3 and out.refused == ()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "IPv6"),
        ("10.1.2.3", "private"),
        ("192.168.1.64", "private"),
        ("169.254.169.254", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1%eth0", "IPv6"),
        ("0.0.0.0", "this network"),
        ("9b36eaac-bb2d-49db-8d4c-57c3e6ae4b2d.local", "mDNS"),
    ],
)
def test_candidates_the_policy_refuses_are_dropped(address: str, why: str) -> None:
    out = screened(f"9 1 udp 2130706431 {address} 5000 typ host", GLOBAL)
    assert out.kept == 1 and len(out.refused) == 1
    shown = f"[{address}]" if ":" in address else address
    assert out.refused[0].startswith(f"{shown}:5000 (") and why in out.refused[0], out.refused
    assert f" {address} 5000 " not in out.sdp and GLOBAL in out.sdp
    # aioice, told that no more candidates come, would give up before the peer's own checks arrive.
    assert "a=end-of-candidates" not in out.sdp


def test_every_candidate_refused_still_leaves_an_offer() -> None:
    out = screened("1 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert out.kept == 0 and "a=candidate" not in out.sdp and check_offer(out.sdp).video_codecs


def test_an_open_policy_keeps_loopback_private_and_mdns_candidates() -> None:
    local = ["1 1 udp 1 127.0.0.1 5000 typ host", "2 1 udp 1 10.0.0.1 5000 typ host",
             "3 1 udp 1 abc-def.local 5000 typ host", PUBLIC]  # fmt: skip
    out = screened(*local, policy=OPEN_POLICY)
    assert out.refused == () and out.sdp == with_candidates(*local)
    loopback_only = NetworkPolicy(allowed_networks=("127.0.0.0/8",))
    out = screened(*local, policy=loopback_only)
    assert [r.split(":")[0] for r in out.refused] == ["10.0.0.1", "abc-def.local", "203.0.113.7"]
    blocked = NetworkPolicy(allowed_networks=("0.0.0.0/0", "::/0"), blocked_networks=("203.0.113.0/24",))
    out = screened(*local, policy=blocked)  # a blocked network: mDNS names can no longer be allowed
    assert [r.split(":")[0] for r in out.refused] == ["abc-def.local", "203.0.113.7"]


@pytest.mark.parametrize(
    ("candidate", "shown"),
    [
        ("1 1 udp 2130706431 93.184.215.14 99999 typ host", "99999"),
        ("1 1 udp 2130706431 93.184.215.14 0 typ host", "'0'"),
        ("1 1 udp 2130706431 93.184.215.14 -1 typ host", "'-1'"),
        ("1 1 udp 2130706431 999.1.1.1 5000 typ host", "999.1.1.1"),
        ("1 1 udp 2130706431 example.com 5000 typ host", "example.com"),
        ("1 1 udp 2130706431 93.184.215.14 5000 host", "typ"),
        ("1 1 udp 2130706431 93.184.215.14", "typ"),
        ("1 1 udp 2130706431 93.184.215.14 5000 typ sneaky", "sneaky"),
        ("1 1 sctp 2130706431 93.184.215.14 5000 typ host", "sctp"),
        ("1 0 udp 2130706431 93.184.215.14 5000 typ host", "component"),
        ("1 1 udp 99999999999 93.184.215.14 5000 typ host", "priority"),
        ("1 1 udp 2130706431 93.184.215.14 ５０００ typ host", "５０００"),
    ],
)
def test_malformed_candidates_are_bad_sdp(candidate: str, shown: str) -> None:
    message = screen_refused(candidate)
    assert "ICE candidate" in message and shown in message, message


def test_too_many_candidates_are_bad_sdp() -> None:
    many = [f"{i} 1 udp 2130706431 93.184.215.14 {5000 + i} typ host" for i in range(33)]
    assert "33 ICE candidates" in screen_refused(*many) and "webrtc_max_candidates" in screen_refused(*many)
    assert screened(*many[:32]).kept == 32


def test_a_real_offer_keeps_its_line_endings(aiortc_sdp: tuple[str, str]) -> None:
    offer, _ = aiortc_sdp
    out = screen_candidates(offer, OPEN_POLICY, max_candidates=32)
    assert out.sdp == offer and out.kept == offer.count("a=candidate:") > 0
