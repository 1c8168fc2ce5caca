"""Request and response schemas of the v1 API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.records import JobState, StreamState


class VideoUrlCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    fps: float | None = Field(None, gt=0, le=30)
    budget: int | None = Field(None, ge=16, le=1_000_000)
    mode: Literal["fps", "keyframes"] | None = None
    name: str = Field("", max_length=200)


class VideoForm(BaseModel):
    """The non-file fields of a multipart upload."""

    fps: float | None = Field(None, gt=0, le=30)
    budget: int | None = Field(None, ge=16, le=1_000_000)
    mode: Literal["fps", "keyframes"] | None = None
    name: str = Field("", max_length=200)


class VideoAccepted(BaseModel):
    job_id: str
    stream_id: str


class JobPublic(BaseModel):
    job_id: str
    stream_id: str
    state: JobState
    progress: float
    frames_sampled: int
    frames_encoded: int
    error: str | None


class LiveStreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096, description="rtsp://, an HTTP MJPEG URL, an HLS playlist")
    fps: float | None = Field(None, gt=0, le=30, description="Frames kept per second (default 1).")
    budget: int | None = Field(None, ge=16, le=1_000_000, description="Token budget of the stream's memory.")
    name: str = Field("", max_length=200)
    check: bool = Field(True, description="Refuse a URL that gives no frame now (else retry it forever).")


class WebRtcOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(
        min_length=1, max_length=200_000, description="The browser's SDP offer, its ICE candidates included."
    )
    type: Literal["offer"]
    fps: float | None = Field(None, gt=0, le=30, description="Frames kept per second (default 1).")
    budget: int | None = Field(None, ge=16, le=1_000_000, description="Token budget of the stream's memory.")
    name: str = Field("", max_length=200)


class WebRtcAnswer(BaseModel):
    sdp: str
    type: Literal["answer"]
    stream_id: str


TimeBound = str | float


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=100_000)
    stream: bool = False
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    since: TimeBound | None = Field(
        None,
        description="Only what the stream showed from this time: -10m (before now), +5m (from the start), "
        "now, ISO 8601 or Unix seconds (live streams).",
    )
    until: TimeBound | None = Field(
        None, description="Only what the stream showed up to this time (as since)."
    )


class AnswerPublic(BaseModel):
    answer: str
    tokens_used: int
    budget: int
    slots_used: int
    prompt_tokens: int
    latency_s: float
    ttft_s: float
    memory_version: int


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, for programs: validation_error, unknown_stream, ...")
    message: str = Field(description="What went wrong, for people.")


class ErrorPublic(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class GapPublic(BaseModel):
    """A time a live stream gave no video (wall-clock Unix seconds)."""

    start: float
    end: float
    duration_s: float
    reason: str


class StreamPublic(BaseModel):
    """A stream's record, counters and state (README, "Stream states").

    Live fields (``frames_sampled`` ... ``resolution``) are present for kinds "live" and "webrtc" only."""

    stream_id: str
    kind: Literal["upload", "url", "live", "webrtc"]
    name: str
    source: str
    state: StreamState
    fps: float
    budget: int
    sample_mode: Literal["fps", "keyframes"]
    created_at: float
    error: str | None
    tenant: str
    job_id: str | None = Field(description="The job that reads an upload's or URL's video (else null).")
    job_state: JobState | None = Field(
        description="That job's state (null for live kinds, or once the job record expired)."
    )
    last_error: str | None
    frames_encoded: int
    tokens_used: int
    slots: int
    gaps: list[GapPublic]
    last_frame_t: float | None = Field(description="Stream time (s) of the newest slot's end.")
    frames_sampled: int | None = None
    frames_dropped: int | None = None
    frames_skipped: int | None = None
    frames_replayed: int | None = None
    reconnects: int | None = None
    gaps_total: int | None = None
    last_frame_time: float | None = None
    disconnected_since: float | None = None
    reader: str | None = None
    resolution: str | None = Field(None, description='"WxH" of the last frame as the source sent it.')


class StreamListPublic(BaseModel):
    streams: list[StreamPublic]


class DeletePublic(BaseModel):
    stream_id: str
    deleted: bool = Field(description="Erased with its memory (purge=true); else stopped and kept.")
    stopped: bool


class SlotPublic(BaseModel):
    slot_id: int
    t0: float
    t1: float
    side: int
    tokens: int = Field(description="Prompt tokens of the slot: its visual tokens and its timestamp text.")
    frames: int
    thumbnail: str = Field(description="Path of the slot's JPEG thumbnail.")


class MemoryPublic(BaseModel):
    stream_id: str
    budget: int
    tokens_used: int
    version: int
    side: int | None
    frames: int
    policy: str | None = Field(None, description="Absent while the memory is empty.")
    slots: list[SlotPublic]


class IceServerPublic(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class WebRtcConfigPublic(BaseModel):
    ice_servers: list[IceServerPublic]
    max_peers: int
    peers: int
    watchdog_s: float
    fps: float
    budget: int


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded", "down"]
    mode: Literal["embedded", "distributed"]
    model: str
    redis: str = Field(description='"ok", or "error: <what>"')
    broker: str = Field(description='"ok", or "error: <what>"')
    workers: dict[str, int] | None = Field(description="Live workers per queue (null if Redis is down).")


JPEG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A JPEG image.",
        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""OpenAPI ``responses`` of a route that answers a thumbnail."""

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer as JSON, or with `stream`: Server-Sent Events `piece` (text), `restart`, "
        "`done` (the JSON answer), `error` (as `ErrorPublic.error`).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
"""OpenAPI ``responses`` of a route that answers JSON, or Server-Sent Events when asked to stream."""
