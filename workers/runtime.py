"""What a process needs to run vidmem's plain functions: Redis, stores, a dispatcher, models.

Models load lazily, once per process (the API process never loads them: it never imports torch).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import fakeredis
from redis import Redis

from core.errors import VidmemError
from core.settings import Settings
from model.compressor import max_slots
from model.families import Defaults, defaults_for, frame_side
from model.memory import MemoryConfig, TokenMemory
from stream.urls import NetworkPolicy
from workers.frames import FrameStore
from workers.live_records import LiveRecords
from workers.records import Records

URL_POLICY_HINT = "to allow a network, set VIDMEM_URL_ALLOWED_NETWORKS, e.g. '[\"192.168.1.0/24\"]'"
"""Appended to a URL's refusal by a forbidden network (``NetworkPolicy.hint``)."""

URL_TLS_HINT = "certificates are checked by VIDMEM_URL_VERIFY_TLS (public, always or never)"
"""Appended to a refused TLS certificate of a URL (``NetworkPolicy.tls_hint``)."""

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from model.backend import Backend


class Dispatcher(Protocol):
    """Runs a pipeline task by name (``ingest``, ``encode``, ``answer``), somewhere, later.

    ``workers.dispatch`` has the two kinds and ``dispatch.runtime_for`` picks one for the settings."""

    @property
    def in_process(self) -> bool:
        """Whether the tasks run in this process (thread pools, as in embedded mode): each queue then
        has a worker, whatever the heartbeats say."""
        ...

    def submit(self, task: str, *args: Any) -> object: ...


def make_redis(settings: Settings) -> Redis:
    """The real Redis in distributed mode; an in-process one (fakeredis) in embedded mode."""
    if settings.redis_url is None:
        return fakeredis.FakeRedis(server=fakeredis.FakeServer())
    # Timeouts: a Redis that hangs (stopped, packets dropped) fails calls after a few seconds instead of
    # blocking threads forever. The longest blocking command is an answer's 0.5 s XREAD.
    return Redis.from_url(
        settings.redis_url, health_check_interval=30, socket_keepalive=True, socket_connect_timeout=5,
        socket_timeout=10,
    )  # fmt: skip


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    memory: TokenMemory
    records: Records
    frames: FrameStore
    live: LiveRecords
    dispatcher: Dispatcher | None = None
    trusted_urls: bool = False
    """URLs come from the machine's own user (``vidmem ask``), not from clients: no network policy."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _models: dict[str, Any] = field(default_factory=dict)
    _facts_lock: threading.Lock = field(default_factory=threading.Lock)
    _facts: tuple[Defaults, int] | None = None

    @classmethod
    def create(
        cls, settings: Settings, client: Redis | None = None, *, trusted_urls: bool = False
    ) -> Runtime:
        r = client if client is not None else make_redis(settings)
        records, frames = Records(r), FrameStore(r, ttl_s=settings.frame_ttl_s)
        return cls(
            settings=settings,
            redis=r,
            memory=TokenMemory(r),
            records=records,
            frames=frames,
            live=LiveRecords(r, records, frames),
            trusted_urls=trusted_urls,
        )

    def close(self) -> None:
        shutdown = getattr(self.dispatcher, "shutdown", None)
        if shutdown is not None:
            shutdown()

    @property
    def in_process(self) -> bool:
        """Whether this process runs the tasks itself: embedded mode, or an in-process dispatcher."""
        return self.settings.embedded or (self.dispatcher is not None and self.dispatcher.in_process)

    def submit(self, task: str, *args: Any) -> None:
        if self.dispatcher is None:
            raise RuntimeError("no dispatcher configured")
        self.dispatcher.submit(task, *args)

    def _cached(self, name: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._models:
                self._models[name] = build()
            return self._models[name]

    def backend(self) -> Backend:
        from workers.models import load_backend

        return self._cached("backend", lambda: load_backend(self.settings))

    def url_policy(self) -> NetworkPolicy | None:
        """Where a client's URL (a video or a live stream) may lead: the allowed networks
        (``Settings.url_networks``: url_allowed_networks, else the mode's default) and url_blocked_networks
        over the built-in forbidden networks (``stream.urls.FORBIDDEN_NETWORKS``); a refusal names the
        setting that lifts it. TLS certificates (https, rtsps) are checked by ``url_verify_tls``. None (no
        network check, the scheme allow-list still holds) when ``trusted_urls``: the user's own one-shot
        ``vidmem ask``, on the user's own machine."""
        if self.trusted_urls:
            return None
        s = self.settings
        return NetworkPolicy(
            s.url_networks,
            tuple(s.url_blocked_networks),
            hint=URL_POLICY_HINT,
            verify_tls=s.url_verify_tls,
            tls_hint=URL_TLS_HINT,
        )

    def _checkpoint_facts(self) -> tuple[Defaults, int]:
        """The model's memory defaults and frame side, read once from its config.json (not loading it, and
        not under the models' lock, which a model load holds for minutes)."""
        with self._facts_lock:
            if self._facts is None:
                self._facts = _checkpoint_facts(self.settings.model)
            return self._facts

    def frame_side(self) -> int:
        """The square side frames are decoded at: ``Settings.frame_size``, else the model's own."""
        s = self.settings.frame_size
        return s if s is not None else self._checkpoint_facts()[1]

    def memory_defaults(self) -> Defaults:
        """The memory settings in force: each one set in ``Settings``, else the model's default
        (``model.families``: read from the checkpoint's config, without loading it)."""
        s = self.settings
        d = self._checkpoint_facts()[0]
        return Defaults(
            budget=d.budget if s.budget is None else s.budget,
            min_side=d.min_side if s.min_side is None else s.min_side,
            text_tokens=d.text_tokens if s.text_tokens is None else s.text_tokens,
        )

    def stream_budget(self, budget: int | None) -> int:
        """A new stream's budget: the one asked for (else the model's), refused with a 422 when it cannot
        hold two slots of this model (a slot costs at least one token and its label's reserve)."""
        d = self.memory_defaults()
        chosen = budget if budget is not None else d.budget
        if max_slots(chosen, d.text_tokens, 1) < 2:
            least = 2 * (1 + d.text_tokens)
            raise VidmemError(
                f"budget {chosen} holds fewer than two slots of this model: give at least {least}",
                code="validation_error",
            )
        return chosen

    def memory_config(self, budget: int) -> MemoryConfig:
        """The memory config of a new stream: geometry and fingerprint from the loaded backend, the rest
        from ``memory_defaults``."""
        info = self.backend().info
        d = self.memory_defaults()
        if d.text_tokens == 0 and info.positions == "mrope":
            raise ValueError(
                f"VIDMEM_TEXT_TOKENS=0 cannot hold {info.family}'s vision markers around each slot (2 tokens)"
            )
        floor = min(d.min_side, info.s_max)
        while floor > 1 and max_slots(budget, d.text_tokens, floor) < 2:
            floor -= 1  # a budget too small for two slots at the model's floor lowers the floor
        return MemoryConfig(
            budget=budget,
            s_max=info.s_max,
            dim=info.dim,
            text_tokens=d.text_tokens,
            min_side=floor,
            policy=self.settings.merge_policy,
            dtype=self.settings.storage_dtype,
            backend=info.fingerprint,
        )


UNREAD = (Defaults(budget=2048, min_side=1, text_tokens=8), 384)
"""The memory defaults and frame side used when the model's config.json cannot be read here (an API
process without the hub cache): vidmem's defaults from before there were several families."""


def _checkpoint_facts(model: str) -> tuple[Defaults, int]:
    """The model's memory defaults and frame side (``model.families``), or ``UNREAD``'s, said once."""
    try:
        return defaults_for(model), frame_side(model)
    except (ValueError, OSError) as e:
        log.warning("the model's defaults are not readable here (%s): budget %d, frame side %d; set "
                    "VIDMEM_BUDGET and VIDMEM_FRAME_SIZE, or give this process the model's files",
                    e, UNREAD[0].budget, UNREAD[1])  # fmt: skip
        return UNREAD
