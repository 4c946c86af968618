"""Webhook retry policy: classify an attempt's outcome and say what happens next.

- 2xx: delivered.
- 410 Gone: the receiver says the endpoint is retired; pause the connector and keep the
  delivery pending (not dead-lettered), so ResumeConnector carries on where it stopped.
- 408, 429, 5xx, timeouts and connection errors: retry.
- Any other status (3xx, other 4xx) is retried too, until the last attempt. A 401/403/404
  is usually a receiver mis-deploy or a rotated secret that an operator fixes within the
  backoff window; giving up at once would dead-letter a whole burst for a few seconds of
  misconfiguration. Redirects are not followed (the URL is what was configured).
- After `max_attempts` failures: dead letter (RetryDeadLetters re-queues).

Backoff is "full jitter" (AWS Architecture Blog, 2015): uniform in [0, min(cap, base*2^n)),
so clients retrying together spread out. A Retry-After header (seconds or an HTTP date) is
a floor: we never come back sooner than asked, but at most `max_retry_after` later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

Random = Callable[[], float]  # a source of floats in [0, 1), e.g. random.Random().random


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    GONE = "GONE"
    RETRYABLE = "RETRYABLE"


class Verdict(StrEnum):
    DELIVERED = "DELIVERED"
    RETRY = "RETRY"
    PAUSE_CONNECTOR = "PAUSE_CONNECTOR"
    DEAD_LETTER = "DEAD_LETTER"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    base_delay: float = 1.0
    max_delay: float = 600.0
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if self.max_retry_after < 0:
            raise ValueError("max_retry_after must not be negative")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the wait after failed attempt number `attempt` (1-based)."""
        # The exponent is capped so huge attempt numbers cannot overflow a float.
        return min(self.max_delay, self.base_delay * 2.0 ** min(max(attempt - 1, 0), 62))

    def backoff(self, attempt: int, random: Random) -> float:
        return random() * self.ceiling(attempt)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP attempt gave: a status, or None for a timeout or connection error."""

    status: int | None
    retry_after: str | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Next:
    verdict: Verdict
    # Seconds to wait before the next attempt (RETRY only).
    delay: float = 0.0
    # For last_error and dead letters: the status or error kind, never a response body.
    reason: str = ""

    def due(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay)


def classify(status: int | None) -> Outcome:
    if status is not None and 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 410:
        return Outcome.GONE
    return Outcome.RETRYABLE


def next_step(
    policy: RetryPolicy, attempt_number: int, attempt: Attempt, now: datetime, random: Random
) -> Next:
    """What to do after attempt number `attempt_number` (1-based) ended with `attempt`;
    `now` (aware) only serves to read a Retry-After date."""
    outcome = classify(attempt.status)
    if outcome == Outcome.SUCCESS:
        return Next(Verdict.DELIVERED)
    reason = describe(attempt)
    if outcome == Outcome.GONE:
        return Next(Verdict.PAUSE_CONNECTOR, reason=reason)
    if attempt_number >= policy.max_attempts:
        return Next(Verdict.DEAD_LETTER, reason=reason)
    delay = policy.backoff(attempt_number, random)
    asked = parse_retry_after(attempt.retry_after, now)
    if asked is not None:
        delay = max(delay, min(asked, policy.max_retry_after))
    return Next(Verdict.RETRY, delay=delay, reason=reason)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110);
    None when absent or unreadable, 0 for a date in the past."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # "-0000": HTTP dates are always GMT
    return max(0.0, (when - now).total_seconds())


def describe(attempt: Attempt) -> str:
    if attempt.status is None:
        return attempt.error or "no response"
    return f"HTTP {attempt.status}"
