from __future__ import annotations

from kizuna_identity.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_locks_after_max_failures_then_unlocks() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_failures=3, window_seconds=60, lockout_seconds=120, clock=clock)
    for _ in range(2):
        throttle.failed("a@example.jp")
    assert throttle.retry_after("a@example.jp") == 0
    throttle.failed("a@example.jp")
    assert throttle.retry_after("a@example.jp") == 120
    assert throttle.retry_after("b@example.jp") == 0
    clock.now += 121
    assert throttle.retry_after("a@example.jp") == 0


def test_old_failures_fall_out_of_the_window_and_success_resets() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_failures=2, window_seconds=60, lockout_seconds=60, clock=clock)
    throttle.failed("a@example.jp")
    clock.now += 61
    throttle.failed("a@example.jp")
    assert throttle.retry_after("a@example.jp") == 0
    throttle.succeeded("a@example.jp")
    throttle.failed("a@example.jp")
    assert throttle.retry_after("a@example.jp") == 0


def test_memory_stays_bounded_under_spraying() -> None:
    clock = Clock()
    throttle = LoginThrottle(
        max_failures=5, window_seconds=60, lockout_seconds=60, clock=clock, max_tracked=1000
    )
    for i in range(5000):
        throttle.failed(f"spray-{i}@example.jp")
    assert len(throttle._failures) <= 1000
    clock.now += 61
    for i in range(100):
        throttle.failed(f"late-{i}@example.jp")
    # Stale entries are dropped, a few at a time, as new failures arrive.
    assert sorted(throttle._failures) == sorted(f"late-{i}@example.jp" for i in range(100))
