"""ReplyGuard reads an RTSP server's bytes as FFmpeg's RTSP client does (libavformat/rtsp.c) and refuses every
redirect FFmpeg could follow, and every byte stream FFmpeg could frame differently from it."""

from __future__ import annotations

import pytest

from stream.rtsp_replies import MAX_BODY, Refused, ReplyGuard, c_atoi, status_of

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"
    b"a=x-note:RTSP/1.0 302 Moved\r\nLocation: rtsp://127.0.0.1:1/x\r\n"  # text in a body is not a message
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n"
)
SESSION = b"".join(
    [
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://10.0.0.5/cam/\r\n"
        + b"Content-Type: application/sdp\r\n"
        + f"Content-Length: {len(SDP)}\r\n\r\n".encode()
        + SDP,
        b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 1\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 1\r\n\r\n",
        # interleaved RTP whose payload holds the bytes of a redirect: data, not a message
        b"$\x00\x00\x40" + (b"\nRTSP/1.0 302 x\r\nLocation: rtsp://127.0.0.1/\r\n\r\n" * 2)[:64],
        b"$\x01\x00\x08" + b"\x80\xc9\x00\x01abcd",  # an 8-byte RTCP receiver report
        b"$\x00\x00\x00",  # an empty packet: no payload to misread
        b"GET_PARAMETER rtsp://127.0.0.1/ RTSP/1.0\r\nCSeq: 9\r\n\r\n",  # a request from the server
        b"\r\n",  # an empty message
    ]
)


def _feed(chunks: list[bytes]) -> ReplyGuard:
    guard = ReplyGuard()
    for chunk in chunks:
        guard.feed(chunk)
    return guard


@pytest.mark.parametrize("split", [None, 1, 3, 7, 64])
def test_a_camera_session_passes_in_any_chunking(split: int | None) -> None:
    chunks = [SESSION] if split is None else [SESSION[i : i + split] for i in range(0, len(SESSION), split)]
    guard = _feed(chunks)
    assert (guard.messages, guard.packets) == (6, 3)


@pytest.mark.parametrize(
    "reply",
    [
        b"RTSP/1.0 302 Moved\r\nCSeq: 1\r\nLocation: rtsp://127.0.0.1:8554/x\r\n\r\n",
        b"RTSP/1.0 301 Moved\r\n\r\n",  # no Location: FFmpeg would still redirect (to an empty URL)
        b"RTSP/2.0 399 Whatever\r\n\r\n",
        b"  \tRTSP/1.0 \t 0303  See Other\r\n\r\n",  # get_word skips blanks; atoi takes leading zeros
        b"RTSP/1.0 +307 x\r\n\r\n",
        b"RT\rSP/1.0 30\r2\r\n\r\n",  # FFmpeg drops every \r, wherever it is
        b"\r\r\rRTSP/1.0 305 Use Proxy\n\n",
        b"RTSP/1.0 4294967598 x\r\n\r\n",  # (int) of 2^32 + 302 is 302
        b"RTSP/1.0 200 OK\r\nLoCaTiOn: rtsp://127.0.0.1/x\r\n\r\n",  # a Location in any message is refused
        # FFmpeg 8.1 reads the status word whole (buf1[MAX_URL_SIZE]): zeros before 302 are still a 302
        b"RTSP/1.0 " + b"0" * 1100 + b"302 Moved\r\nCSeq: 1\r\n\r\n",
        b"RTSP/1.0 " + b"0" * 4000 + b"301\r\nLocation: rtsp://127.0.0.1/x\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nLocation: rtsp://127.0.0.1/x\r\n\r\n",
    ],
)
def test_redirects_are_refused(reply: bytes) -> None:
    guard = _feed([b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n", b"$\x00\x00\x08abcdefgh"])
    with pytest.raises(Refused) as refused:
        for i in range(len(reply)):  # byte by byte: refused at the latest with the status line's newline
            guard.feed(reply[i : i + 1])
            assert not reply[: i + 1].endswith(b"\n\n") and not reply[: i + 1].endswith(b"\r\n\r\n")
    assert "redirect" in str(refused.value) or "location" in str(refused.value).lower()


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        # a '$' at the start of a header line: one FFmpeg version skips a packet, another ends the reply
        (
            b"RTSP/1.0 200 OK\r\nContent-Length: 60\r\n$\x00\x00\x08abcdefgh\r\n\r\nRTSP/1.0 302 x\r\n\r\n",
            "starts with",
        ),
        (b"$\x00\x00\x04RTSP/1.0 302 x\r\n\r\n", "4 bytes"),  # read as text by ff_rtsp_tcp_read_packet
        (b"RTSP/1.0 200 OK\r\nContent-Length: 12abc\r\n\r\n", "Content-Length"),
        (b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"RTSP/1.0 200 OK\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n", "larger"),
        (b"RTSP/1.0 200 OK\r\nX-Pad: " + b"a" * 4100 + b"\r\n\r\n", "longer"),
        (b"RTSP/1.0 200 OK\r\nX: \x00\r\n\r\n", "NUL"),
    ],
)
def test_ambiguous_framing_is_refused(stream: bytes, why: str) -> None:
    with pytest.raises(Refused, match=why):
        ReplyGuard().feed(stream)


def test_a_redirect_after_a_body_split_across_chunks_is_refused() -> None:
    guard = ReplyGuard()
    guard.feed(b"RTSP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    with pytest.raises(Refused) as refused:
        guard.feed(b"56789RTSP/1.0 302 Moved\r\n")  # the body ends mid-chunk; the next message redirects
    assert refused.value.status == 302 and guard.messages == 1


def test_status_words_are_read_like_ffmpeg() -> None:
    assert status_of(b"RTSP/1.0 200 OK") == 200
    assert status_of(b"RTSP/1.0") == 0
    assert status_of(b"rtsp/1.0 302 Moved") is None  # strncmp is case-sensitive: a request to FFmpeg
    assert status_of(b"SET_PARAMETER rtsp://x RTSP/1.0") is None
    assert c_atoi(b"99999999999999999999") == -1  # strtol clamps to LONG_MAX, (int) keeps the low bits
    assert status_of(b"RTSP/1.0 " + b"0" * 1100 + b"302 Moved") == 302  # the word is read whole
    assert status_of(b"RTSP/1.0 " + b"0" * 4083 + b"302") == 302  # 4,095 bytes: the whole line FFmpeg keeps
    assert status_of(b"RTSP/1.0 " + b"0" * 4084 + b"302") == 30  # its 4,096th byte is cut, like FFmpeg does
    assert c_atoi(b" -12x") == -12 and c_atoi(b"x") == 0
