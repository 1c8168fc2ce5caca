"""Request and response schemas of the v1 API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    state: Literal["queued", "running", "done", "failed"]
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
