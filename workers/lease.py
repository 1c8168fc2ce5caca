"""A Redis lease: one holder at a time, renewed while it works, lost if it dies.

Used so that a redelivered task (the broker hands an unacked task to another worker after
``visibility_timeout``) waits while the first holder is alive and takes over once it is not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Take a free lease, or take back our own (a holder that runs again after an outage, same token).
_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    """Another holder took the lease (ours expired): stop working on its behalf."""


class Lease:
    def __init__(self, client: redis.Redis, key: str, ttl_s: float, token: str | None = None) -> None:
        """``token`` names the holder: a holder that runs again with the same token (after its Redis came
        back, say) takes its own lease back at once instead of waiting for it to expire."""
        self.r = client
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = token or uuid.uuid4().hex
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self) -> bool:
        return bool(self._acquire(keys=[self.key], args=[self.token, self.ttl_ms]))

    def acquire(self, give_up: Callable[[], bool], poll_s: float = 0.5) -> bool:
        """Wait for the lease; False if ``give_up()`` turns true first (e.g. the work got done)."""
        while not self.try_acquire():
            if give_up():
                return False
            time.sleep(poll_s)
        return True

    def renew(self) -> None:
        if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            raise LeaseLost(f"lease {self.key} was lost")

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])
