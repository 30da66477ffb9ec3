"""A circuit breaker per provider: stop sending requests to an upstream that keeps failing.

    closed ──(failure_threshold consecutive failures)──► open ──(cooldown_s)──► half-open
       ▲                                                  ▲                        │
       └──────────────(the probe succeeds)────────────────┴──(the probe fails)─────┘

While open, the provider is skipped (the next provider or fallback model answers; with none
left the gateway fails fast with 503 instead of every request waiting for a timeout). After
the cooldown one request probes it (half-open); others keep being skipped until the probe ends.
State is per gateway replica: each replica learns on its own, within a few requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    __slots__ = ("failure_threshold", "cooldown_s", "_clock", "_failures", "_opened_at", "_probing")

    def __init__(self, *, failure_threshold: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def retry_after_s(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it does now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def try_acquire(self) -> bool:
        """May a request go to this provider now? In half-open, only the one probe may."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """The request ended without telling anything about the provider's health (e.g. a 4xx)."""
        if self._probing:
            self._probing = False
