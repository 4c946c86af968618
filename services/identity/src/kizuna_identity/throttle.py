"""Login lock-out: too many failures for one login id within a window lock it for a while.

The services count failures in the database, shared by every replica
(`lockouts.SharedLoginThrottle`); `LoginThrottle` counts them in this process, for an
application on the in-memory event store.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Protocol


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int = 5
    window_seconds: float = 15 * 60
    lockout_seconds: float = 15 * 60


class Throttle(Protocol):
    def retry_after(self, login_id: str) -> int:
        """Seconds until the login may be tried again; 0 when it is not locked."""

    def failed(self, login_id: str) -> None: ...

    def succeeded(self, login_id: str) -> None: ...


@dataclass
class LoginThrottle:
    max_failures: int = ThrottlePolicy.max_failures
    window_seconds: float = ThrottlePolicy.window_seconds
    lockout_seconds: float = ThrottlePolicy.lockout_seconds
    max_tracked: int = 100_000
    clock: Callable[[], float] = monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, login_id: str) -> int:
        """Seconds until the login may be tried again; 0 when it is not locked."""
        with self._lock:
            until = self._locked_until.get(login_id)
            if until is None:
                return 0
            remaining = until - self.clock()
            if remaining <= 0:
                del self._locked_until[login_id]
                return 0
            return max(1, int(remaining))

    def failed(self, login_id: str) -> None:
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            failures = self._failures.setdefault(login_id, deque())
            failures.append(now)
            while failures and failures[0] < now - self.window_seconds:
                failures.popleft()
            if len(failures) >= self.max_failures:
                self._locked_until[login_id] = now + self.lockout_seconds
                del self._failures[login_id]

    def _forget_old(self, now: float) -> None:
        # Sprayed login ids must not grow memory without bound: entries are kept in
        # insertion order, so the stale ones are at the front.
        for login_id in list(self._failures)[:16]:
            failures = self._failures[login_id]
            if failures and failures[-1] >= now - self.window_seconds:
                break
            del self._failures[login_id]
        while len(self._failures) >= self.max_tracked:
            del self._failures[next(iter(self._failures))]
        for login_id in list(self._locked_until)[:16]:
            if self._locked_until[login_id] > now:
                break
            del self._locked_until[login_id]

    def succeeded(self, login_id: str) -> None:
        with self._lock:
            self._failures.pop(login_id, None)
