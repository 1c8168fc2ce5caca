"""Live readers: the ``vidmem ingest`` process (and the embedded server) reading registered live streams.

``LiveSupervisor`` runs a heartbeat loop. Each beat it renews the lease of every stream it reads (a
``workers.live_reader.StreamReader`` each), reports their counters and gaps, lets go of streams that were
stopped or deleted, and takes any registered stream whose lease is free (a new stream, or one whose
reader died: its lease expires ``live_lease_s`` after its last beat). Two supervisors on one Redis
therefore read each stream exactly once, and a killed one's streams move to the other within a few
seconds. A supervisor also reads the feeds given to ``adopt`` (WebRTC tracks of its process); one that
only adopts (``claim=False``: a distributed API process) never claims URL streams.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import redis

from core.logs import log_context
from stream.errors import SourceError
from stream.live_types import FrameFeed
from workers import health
from workers.lease import Lease
from workers.live_reader import StreamReader
from workers.records import UnknownStreamRecord
from workers.runtime import Runtime

log = logging.getLogger(__name__)


class LiveSupervisor:
    """Reads every registered live stream it can lease, up to ``live_max_streams`` (with ``claim``), and
    the feeds given to ``adopt`` (WebRTC tracks of this process)."""

    def __init__(self, rt: Runtime, name: str | None = None, *, claim: bool = True) -> None:
        self.rt = rt
        self.claim = claim
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.beat_name = f"live:{self.owner}"  # its heartbeat (``workers.health``) while it claims streams
        self.readers: dict[str, StreamReader] = {}
        self._lock = threading.Lock()  # readers: the beat thread and adopt() callers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Beat until ``stop()``; then close every reader (in parallel) and give its lease back.

        A failed beat (Redis or the broker unreachable for a moment) is logged and the next one tries
        again: leases outlive a few missed beats, and streams whose leases expired meanwhile are
        re-claimed by whichever process beats first.
        """
        try:
            while True:
                try:
                    self.tick()
                except redis.RedisError:
                    log.exception("live supervisor: heartbeat failed; retrying")
                if self._stop.wait(self.rt.settings.live_heartbeat_s):
                    break
        except Exception:  # a bug: the supervisor ends (closing its readers below), logged, then raises
            log.exception("live supervisor failed")
            raise
        finally:
            if self.claim:
                try:
                    health.drop_beat(self.rt.redis, self.beat_name)
                except redis.RedisError:  # it expires by itself
                    log.warning("live supervisor: could not remove its heartbeat")
            with self._lock:
                readers, self.readers = list(self.readers.values()), {}
            closing = [threading.Thread(target=_close_quietly, args=(r,), daemon=True) for r in readers]
            for t in closing:
                t.start()
            for t in closing:
                t.join(30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LiveSupervisor:
        """Run in a background thread (the embedded server)."""
        self._thread = threading.Thread(target=self.run, name="vidmem-live-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def adopt(self, sid: str, source: FrameFeed) -> None:
        """Read ``source`` as stream ``sid`` (just created, so its lease is free) from now on."""
        lease = Lease(self.rt.redis, self.rt.live.lease_key(sid), ttl_s=self.rt.settings.live_lease_s)
        if not lease.try_acquire():
            raise RuntimeError(f"stream {sid} is already being read")
        try:
            reader = StreamReader(self.rt, sid, lease, self.owner, source=source).start()
        except BaseException:
            lease.release()
            raise
        with self._lock:
            self.readers[sid] = reader

    def tick(self) -> None:
        with self._lock:
            current = list(self.readers.items())
        for sid, reader in current:
            try:
                with log_context(stream_id=sid):
                    alive = reader.heartbeat()
            except redis.RedisError:
                log.exception("stream %s: heartbeat failed", sid)
                alive = True  # Redis hiccup: the lease outlives a few missed beats
            except Exception:  # a bug in one stream's reader must not stop the others: it alone is closed
                log.exception("stream %s: its reader failed (a bug); closing it", sid)
                threading.Thread(target=_close_quietly, args=(reader,), daemon=True).start()
                alive = False
            if not alive:
                with self._lock:
                    self.readers.pop(sid, None)
        if not self.claim:
            return
        health.publish_beat(self.rt.redis, self.beat_name, [health.LIVE], 2 * self.rt.settings.live_lease_s)
        for sid in self.rt.live.active():
            if len(self.readers) >= self.rt.settings.live_max_streams:
                break
            if sid not in self.readers:
                try:
                    self._claim(sid)
                except Exception:  # Redis away, or a bug with this one stream: the others are claimed
                    log.exception("stream %s: could not start reading it", sid)

    def _claim(self, sid: str) -> None:
        lease = Lease(self.rt.redis, self.rt.live.lease_key(sid), ttl_s=self.rt.settings.live_lease_s)
        if not lease.try_acquire():
            return
        try:
            if self.rt.records.stream(sid).state == "stopped":  # stopped since we listed it
                self.rt.live.retire(sid)
                lease.release()
                return
            reader = StreamReader(self.rt, sid, lease, self.owner).start()
            with self._lock:
                self.readers[sid] = reader
        except (UnknownStreamRecord, KeyError):  # deleted meanwhile
            self.rt.live.retire(sid)
            lease.release()
        except SourceError as e:  # its URL is no longer allowed (settings changed): stop it for good
            self.rt.records.set_stream_state(sid, "stopped", error=f"{e.code}: {e}")
            self.rt.live.retire(sid)
            lease.release()


def _close_quietly(reader: StreamReader) -> None:
    """Close a reader at shutdown; Redis away only means its lease expires by itself."""
    try:
        reader.close(release=True)
    except redis.RedisError:
        log.exception("stream %s: closing its reader failed", reader.sid)
