"""LiveConfig validation and the reconnect backoff (no peers, milliseconds)."""

from __future__ import annotations

import random

import pytest

from stream.live_types import Backoff, LiveConfig


@pytest.mark.parametrize(
    "bad",
    [
        {"fps": 0},
        {"read_timeout_s": -1},
        {"backoff_initial_s": 2, "backoff_max_s": 1},
        {"jitter": 1.0},
        {"allowed_schemes": ("file",)},
        {"allowed_schemes": "rtsp"},
        {"queue_size": 0},
        {"skip_similar": -1.0},
        {"size": (0, 10)},
    ],
)
def test_live_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LiveConfig(**bad)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0, 0.2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    for d, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= d <= 1.2 * base
    b.reset()
    assert 0.4 <= b.next_delay() <= 0.6
