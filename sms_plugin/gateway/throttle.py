"""Per-user request throttling: a token bucket per user, e.g. ``60/min`` (SMS_MONITOR_RATE).

A user may make bursts up to the rate's count, then one request per ``period / count``; a refused
request learns how many seconds to wait (the 429's ``Retry-After``).
"""

from __future__ import annotations

import math
import time

from cachetools import TTLCache

PERIODS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_USERS_KEPT = 100_000


def parse_rate(rate: str) -> tuple[int, float]:
    """``"60/min"`` → (60, 60.0): requests per period of that many seconds."""
    count, unit = rate.split("/")
    return int(count), PERIODS[unit]


class Throttle:
    """Token buckets by user; a bucket unused for a whole period is full again and forgotten."""

    def __init__(self, rate: str) -> None:
        self.rate = rate
        self.count, self.period = parse_rate(rate)
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(_USERS_KEPT, self.period)

    def wait_seconds(self, user: str) -> int:
        """0 if ``user`` may make a request now (and takes its token), else whole seconds to wait."""
        now = time.monotonic()
        tokens, then = self._buckets.get(user, (float(self.count), now))
        tokens = min(float(self.count), tokens + (now - then) * self.count / self.period)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            return 0
        self._buckets[user] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) * self.period / self.count))
