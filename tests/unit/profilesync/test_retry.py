"""Retry policy: outcome classes, backoff bounds with full jitter, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna_profilesync.domain.retry import (
    Attempt,
    Next,
    Outcome,
    RetryPolicy,
    Verdict,
    classify,
    next_step,
    parse_retry_after,
)

NOW = datetime(2025, 4, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0, max_retry_after=600.0)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (410, Outcome.GONE),
        (408, Outcome.RETRYABLE),
        (429, Outcome.RETRYABLE),
        (500, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (400, Outcome.RETRYABLE),
        (401, Outcome.RETRYABLE),
        (404, Outcome.RETRYABLE),
        (301, Outcome.RETRYABLE),
        (100, Outcome.RETRYABLE),
        (None, Outcome.RETRYABLE),
    ],
)
def test_classify(status: int | None, outcome: Outcome) -> None:
    assert classify(status) == outcome


@pytest.mark.parametrize(
    ("attempt_number", "attempt", "expected"),
    [
        (1, Attempt(200), Next(Verdict.DELIVERED)),
        (5, Attempt(201), Next(Verdict.DELIVERED)),
        (1, Attempt(410), Next(Verdict.PAUSE_CONNECTOR, reason="HTTP 410")),
        (5, Attempt(410), Next(Verdict.PAUSE_CONNECTOR, reason="HTTP 410")),
        (1, Attempt(503), Next(Verdict.RETRY, delay=0.5, reason="HTTP 503")),
        (3, Attempt(None, error="timeout"), Next(Verdict.RETRY, delay=2.0, reason="timeout")),
        (4, Attempt(404), Next(Verdict.RETRY, delay=4.0, reason="HTTP 404")),
        (5, Attempt(503), Next(Verdict.DEAD_LETTER, reason="HTTP 503")),
        (5, Attempt(None), Next(Verdict.DEAD_LETTER, reason="no response")),
        (6, Attempt(400), Next(Verdict.DEAD_LETTER, reason="HTTP 400")),
    ],
)
def test_next_step(attempt_number: int, attempt: Attempt, expected: Next) -> None:
    assert next_step(POLICY, attempt_number, attempt, NOW, lambda: 0.5) == expected


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10_000, 60.0)],
)
def test_backoff_ceiling_doubles_then_caps(attempt: int, ceiling: float) -> None:
    assert POLICY.ceiling(attempt) == ceiling


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 50])
def test_full_jitter_spans_zero_to_ceiling(attempt: int) -> None:
    assert POLICY.backoff(attempt, lambda: 0.0) == 0.0
    top = POLICY.backoff(attempt, lambda: 0.999999)
    assert POLICY.ceiling(attempt) * 0.99 < top < POLICY.ceiling(attempt)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Tue, 01 Apr 2025 12:01:30 GMT", 90.0),
        ("Tue, 01 Apr 2025 11:00:00 GMT", 0.0),  # in the past
        ("Tue, 01 Apr 2025 12:00:10 -0000", 10.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_retry_after_is_a_floor() -> None:
    step = next_step(POLICY, 1, Attempt(429, retry_after="30"), NOW, lambda: 0.5)
    assert step == Next(Verdict.RETRY, delay=30.0, reason="HTTP 429")
    assert step.due(NOW) == NOW + timedelta(seconds=30)


def test_backoff_wins_over_a_shorter_retry_after() -> None:
    step = next_step(POLICY, 4, Attempt(503, retry_after="1"), NOW, lambda: 0.9)
    assert step.delay == pytest.approx(7.2)


def test_retry_after_is_capped() -> None:
    step = next_step(POLICY, 1, Attempt(503, retry_after="86400"), NOW, lambda: 0.0)
    assert step.delay == 600.0


def test_retry_after_does_not_postpone_the_dead_letter() -> None:
    step = next_step(POLICY, 5, Attempt(429, retry_after="30"), NOW, lambda: 0.0)
    assert step.verdict == Verdict.DEAD_LETTER


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": 0.0},
        {"base_delay": 10.0, "max_delay": 5.0},
        {"max_retry_after": -1.0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
