"""Leases: one holder at a time; a holder running again with its own token takes the lease straight back."""

from __future__ import annotations

import pytest
import redis

from workers.lease import Lease, LeaseLost


def test_one_holder_and_its_own_token_comes_back(fake_redis: redis.Redis) -> None:
    first = Lease(fake_redis, "vm:lease:x", ttl_s=30, token="delivery-1")
    assert first.try_acquire()
    other = Lease(fake_redis, "vm:lease:x", ttl_s=30)
    assert not other.try_acquire(), "a second holder took a live lease"
    again = Lease(fake_redis, "vm:lease:x", ttl_s=30, token="delivery-1")  # the same delivery, run again
    assert again.try_acquire()
    again.renew()
    assert int(fake_redis.pttl("vm:lease:x")) > 29_000
    with pytest.raises(LeaseLost):
        other.renew()  # it never held it
    again.release()
    assert other.try_acquire()
