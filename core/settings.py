"""Every setting of vidmem, in one validated class.

Each field can also be set as an environment variable ``VIDMEM_<NAME>``
(e.g. ``VIDMEM_MODEL``, ``VIDMEM_BUDGET``, ``VIDMEM_REDIS_URL``).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
"""The checkpoint vidmem loads unless told otherwise (``Settings.model``, ``LlavaOVConfig.model``)."""

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "vidmem"
"""Where presets, the demo video and uploads live unless told otherwise (``Settings.model_cache``,
``LlavaOVConfig.cache_dir``, ``Settings.upload_dir``)."""

EMBEDDED_URL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
"""What a client's URL may reach beyond public addresses in embedded mode (one user, on loopback), unless
url_allowed_networks says otherwise: the private networks, where cameras live (RFC 1918, IPv6
unique-local). Never loopback, link-local (cloud metadata) or the other special ranges. Not CGNAT
(100.64.0.0/10) either: besides carrier NAT it hosts cloud services (Alibaba Cloud's metadata answers at
100.100.100.200); a camera reached over a CGNAT-range VPN (Tailscale) is allowed by naming its range."""


HostName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=253,
        pattern=r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])$",
    ),
]
"""A host name as a ``Host`` header names it, without a port: ``vidmem.lan``, ``10.0.0.5``, ``[fd00::1]``."""


def _comma_list(v: object) -> object:
    """``"ingest, encode"`` (a variable's text) -> ``("ingest", "encode")``; other values as given."""
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return v


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
"""A list of names, written comma-separated in its variable (not JSON)."""


class IceServer(BaseModel):
    """One STUN or TURN server, as the browser's ``RTCIceServer`` takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = Field(min_length=1, description="stun:host:port, turn:host:port?transport=udp|tcp")
    username: str | None = None
    credential: str | None = None


MODEL_DEFAULT: dict[str, Any] = {"default_text": "the model's (model.families)"}
"""Marks a setting whose unset default comes from the loaded model's family."""


class Settings(BaseSettings):
    """vidmem's configuration, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="VIDMEM_", extra="ignore")

    # --- processes ---
    redis_url: str | None = Field(
        None,
        description="Redis for memory, jobs and the Celery broker. None: embedded mode (in-memory Redis).",
    )
    broker_url: str | None = Field(
        None, description="Celery broker (redis:// or amqp://). None: the Redis at redis_url."
    )
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the API binds to.")

    # --- model ---
    model: str = Field(
        DEFAULT_MODEL,
        description="Hub id (its weights in the local Hugging Face cache: hf download ID) or local "
        "checkpoint directory of LLaVA-OneVision/LLaVA-Video, Qwen2.5-VL, Qwen3-VL or Dynamic-VLM, or a "
        "preset.",
    )
    model_cache: Path = Field(
        DEFAULT_CACHE_DIR,
        description="Where presets (and the sample video of vidmem ask --demo) are built and cached.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on cuda and on CPUs with native bf16 (AVX-512 BF16, AMX), else float32.",
    )
    encode_batch: int = Field(8, ge=1, le=256, description="Frames per encode task and per ViT forward.")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="Longest answer, in tokens.")

    # --- memory ---
    budget: int | None = Field(
        None,
        ge=16,
        le=1_000_000,
        description="Token budget of a stream's memory.",
        json_schema_extra=MODEL_DEFAULT,
    )
    text_tokens: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Most tokens one slot's time label may take (0: no labels).",
        json_schema_extra=MODEL_DEFAULT,
    )
    min_side: int | None = Field(
        None,
        ge=1,
        le=32,
        description="Smallest grid side before slots merge in time.",
        json_schema_extra=MODEL_DEFAULT,
    )
    merge_policy: Literal["similar", "uniform"] = Field("similar", description="Which slots merge first.")
    storage_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of stored tokens.")

    # --- sampling ---
    fps: float = Field(1.0, gt=0, le=30, description="Default sampling rate of uploads, frames per second.")
    sample_mode: Literal["fps", "keyframes"] = Field("fps", description="Default sampling of uploads.")
    frame_size: int | None = Field(
        None,
        ge=32,
        le=1024,
        description="Frames are resized to this square before encoding (unset: the model's own side).",
    )
    allowed_schemes: tuple[str, ...] = Field(
        ("http", "https"), description="URL schemes a client may submit."
    )
    url_allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = Field(
        None,
        description="Networks a client's URL (videos and live streams) may reach although they are "
        "loopback, private, link-local, CGNAT, multicast or reserved, JSON: "
        '["192.168.10.0/24"] (a camera LAN). ["0.0.0.0/0", "::/0"] turns the check off. Unset: the '
        "private networks 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7 in embedded mode, none in "
        "distributed mode.",
    )
    url_blocked_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list,
        description="Networks a client's URL may never reach, even if allowed above, JSON: "
        '["203.0.113.0/24"].',
    )
    url_verify_tls: Literal["public", "always", "never"] = Field(
        "public",
        description="Whose TLS certificate a client's https or rtsps URL must show valid: public (a public "
        "address must; one the URL networks allow, such as a LAN camera with a self-signed certificate, "
        "is encrypted but not verified), always, or never.",
    )
    open_timeout_s: float = Field(15.0, gt=0, le=300, description="Timeout to open and read a URL source.")

    # --- live streams ---
    live_schemes: tuple[str, ...] = Field(
        ("rtsp", "rtsps", "http", "https"), description="URL schemes a client may register as a live stream."
    )
    live_open_timeout_s: float = Field(5.0, gt=0, le=120, description="Limit to open a live source.")
    live_read_timeout_s: float = Field(
        5.0, gt=0, le=120, description="A live source with no frame for this long is reopened (frozen feed)."
    )
    live_hls_read_timeout_s: float = Field(
        15.0, gt=0, le=300, description="The read timeout of HLS sources (must exceed a segment's length)."
    )
    live_backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between reopens.")
    live_queue: int = Field(
        16, ge=1, le=10_000, description="Frames buffered between a live reader and the encoders."
    )
    live_inflight: int = Field(
        32, ge=1, le=100_000, description="Frames of one live stream handed to encoders, not yet in memory."
    )
    live_skip_similar: float | None = Field(
        None, ge=0, le=255, description="Skip near-identical live frames (mean abs. difference, 0-255)."
    )
    live_lease_s: float = Field(
        5.0, gt=0, le=300, description="A dead ingest process's streams are taken over after this long."
    )
    live_heartbeat_s: float = Field(1.0, gt=0, le=60, description="How often an ingest process reports.")
    live_max_streams: int = Field(64, ge=1, le=10_000, description="Live streams one ingest process reads.")
    live_max_gaps: int = Field(1000, ge=1, le=1_000_000, description="Gaps kept per stream (newest).")
    prompt_max_gaps: int = Field(8, ge=0, le=256, description="Gaps named in a prompt (the longest).")

    # --- WebRTC (browsers send their camera or screen to the API process) ---
    webrtc_max_peers: int = Field(
        16, ge=0, le=10_000, description="Concurrent WebRTC connections one API process accepts (then 429)."
    )
    webrtc_watchdog_s: float = Field(
        10.0, gt=0, le=3600, description="A WebRTC stream with no frame for this long is ended."
    )
    webrtc_connect_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="A WebRTC stream whose first frame has not come by then is ended."
    )
    webrtc_ice_servers: list[IceServer] = Field(
        default_factory=list,
        description='STUN/TURN servers, JSON: [{"urls": ["stun:host:3478"]}, {"urls": ["turn:host"], '
        '"username": "u", "credential": "p"}]. Given to aiortc and to the web page.',
    )
    webrtc_loopback: bool = Field(
        True, description="Offer 127.0.0.1 among the server's ICE candidates (browser on the same host)."
    )
    webrtc_start_kbps: int = Field(
        2500, ge=30, le=100_000, description="Bitrate a browser starts sending at (answer's SDP hint)."
    )
    webrtc_min_kbps: int = Field(
        800, ge=30, le=100_000, description="Bitrate a browser never goes below (answer's SDP hint)."
    )
    webrtc_max_kbps: int = Field(
        6000, ge=30, le=100_000, description="Bitrate a browser never exceeds (answer's SDP hint)."
    )

    # --- observability ---
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines of serve, worker and ingest: one JSON object each, or text."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The least severe level logged."
    )
    metrics_token: str | None = Field(
        None, min_length=16, description="Bearer token GET /metrics requires (None: /metrics is open)."
    )
    metrics_max_streams: int = Field(
        100, ge=0, le=100_000, description="Streams with per-stream series in /metrics (the newest)."
    )
    worker_queues: CommaList = Field(
        (),
        description="The queues this Celery worker consumes, comma-separated: `vidmem worker --queues` sets "
        "it for its processes; a process of encode or answer loads the model before its first task.",
    )
    torch_threads: int | None = Field(
        None, ge=1, le=4096, description="Threads torch uses in a model worker process. None: the CPU count."
    )
    worker_heartbeat_s: float = Field(
        5.0, gt=0, le=300, description="How often a Celery worker announces itself (gone after 3 x this)."
    )

    # --- perimeter: who may reach the API from a browser, and what /metrics names ---
    allowed_hosts: list[HostName] = Field(
        default_factory=list,
        max_length=100,
        description="Host names (no port) the API answers to besides loopback (127.0.0.1, localhost, "
        '[::1]), JSON: ["vidmem.lan"]. The embedded mode answers only those (DNS rebinding); distributed '
        "mode checks the Host header only when this is set (else that is its proxy's job).",
    )
    metrics_per_stream: bool | None = Field(
        None,
        description="/metrics series per stream, labelled with stream ids and tenant names. None: only "
        "when metrics_token is set (or in embedded mode, one local tenant); else summed by kind.",
    )

    # --- API limits ---
    max_upload_mb: int = Field(1024, ge=1, le=100_000, description="Largest accepted upload.")
    max_body_kb: int = Field(
        256, ge=1, le=100_000, description="Largest accepted request body other than an upload (JSON, SDP)."
    )
    tenant_max_live_streams: int = Field(
        16, ge=0, le=100_000, description="Live streams (cameras, browsers) one tenant may run at once."
    )
    tenant_max_jobs: int = Field(
        8, ge=0, le=100_000, description="Videos (uploads, URLs) one tenant may have in progress at once."
    )
    ask_per_minute: int = Field(
        60, ge=1, le=1_000_000, description="Questions one tenant may ask per minute."
    )
    # One client must not hurt the others: quota places, a tenant's share of WebRTC peers, ICE candidates.
    tenant_reservation_ttl_s: float = Field(
        60.0, ge=1, le=3600, description="A quota place taken for a request in progress (an upload being "
        "read) is renewed while it runs, and freed this long after its API process died."
    )  # fmt: skip
    webrtc_max_peers_per_tenant: int = Field(
        4,
        ge=0,
        le=10_000,
        description="WebRTC connections one tenant may hold in one API process (then 429).",
    )
    webrtc_ice_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="A WebRTC connection not connected (ICE and DTLS) by then is closed "
        "and its stream ended."
    )  # fmt: skip
    webrtc_max_candidates: int = Field(
        32, ge=1, le=1000, description="ICE candidates an offer may name (more: 400 bad_sdp)."
    )
    max_question_chars: int = Field(2000, ge=1, le=100_000, description="Longest accepted question.")
    max_new_tokens_limit: int = Field(
        1024, ge=1, le=4096, description="Most new tokens a question may ask for (more: 422)."
    )
    url_check_workers: int = Field(
        8, ge=1, le=1000, description="URL pre-checks (probe a video URL, open a camera) one API process "
        "runs at once, on threads of their own; more are refused at once (429 too_many_checks).",
    )  # fmt: skip
    url_check_per_tenant: int = Field(
        2, ge=1, le=1000, description="URL pre-checks one tenant may have running at once (then 429)."
    )
    upload_dir: Path = Field(
        DEFAULT_CACHE_DIR / "uploads",
        description="Where uploads are kept until ingested (shared with ingest workers in distributed mode).",
    )
    answer_timeout_s: float = Field(600.0, gt=0, description="How long the API waits for an answer.")

    # --- queues ---
    frame_ttl_s: int = Field(3600, ge=10, description="Lifetime of frames waiting in Redis for the encoder.")
    task_visibility_timeout_s: int = Field(
        900,
        ge=10,
        description="Redis broker: seconds before an unacked task of a dead worker is redelivered.",
    )
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="How long finished job records are kept.")

    @model_validator(mode="after")
    def _keyless_only_on_loopback(self) -> Settings:
        if self.embedded and not _is_loopback(self.host):
            raise ValueError(
                f"the embedded mode serves without API keys, so it binds to loopback only (host is "
                f"{self.host!r}): use --host 127.0.0.1, or set VIDMEM_REDIS_URL (distributed mode, API keys "
                "from `vidmem keys create`) to serve other machines"
            )
        return self

    @model_validator(mode="after")
    def _default_answer_within_limit(self) -> Settings:
        if self.max_new_tokens > self.max_new_tokens_limit:
            n, limit = self.max_new_tokens, self.max_new_tokens_limit
            raise ValueError(f"max_new_tokens ({n}) exceeds max_new_tokens_limit ({limit})")
        return self

    @model_validator(mode="after")
    def _bitrates_ordered(self) -> Settings:
        if not self.webrtc_min_kbps <= self.webrtc_start_kbps <= self.webrtc_max_kbps:
            raise ValueError("need webrtc_min_kbps <= webrtc_start_kbps <= webrtc_max_kbps")
        return self

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def metrics_stream_labels(self) -> bool:
        """Whether /metrics names streams and tenants (``metrics_per_stream``, else by its default)."""
        if self.metrics_per_stream is not None:
            return self.metrics_per_stream
        return self.embedded or self.metrics_token is not None

    @property
    def url_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks a client's URL may reach beyond public addresses: url_allowed_networks when
        given (the operator's choice, in either mode), else the mode's default."""
        if self.url_allowed_networks is not None:
            return tuple(self.url_allowed_networks)
        return EMBEDDED_URL_NETWORKS if self.embedded else ()

    @property
    def broker(self) -> str | None:
        """The Celery broker's URL: broker_url, else the Redis at redis_url (None in embedded mode)."""
        return self.broker_url or self.redis_url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
