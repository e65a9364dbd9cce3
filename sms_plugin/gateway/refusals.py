"""Refused webhook deliveries seen lately, per webhook and per client address, in this gateway process.

A sender that keeps being refused is answered 429 and no longer audited one delivery at a time
(its refusals are still counted in the catalog, one row per webhook, reason and hour)::

    windows = RefusalWindows()
    if windows.count(address_key("10.0.0.9")) >= ADDRESS_LIMIT: ...
    windows.add(address_key("10.0.0.9"), ADDRESS_LIMIT)
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

WINDOW_SECONDS = 60.0
ADDRESS_LIMIT = 30
"""Refused deliveries from one client address per minute; beyond, all its deliveries get 429."""
MAX_KEYS = 10_000
"""Webhooks and addresses remembered at once; the least recently refused are forgotten first."""


def address_key(address: str) -> str:
    return f"address:{address}"


def hook_key(hook_id: str) -> str:
    return f"hook:{hook_id}"


class RefusalWindows:
    """Times of recent refusals per key (a sliding window of ``WINDOW_SECONDS``), bounded in memory."""

    def __init__(self, window: float = WINDOW_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self._window = window
        self._max_keys = max_keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, key: str) -> int:
        """Refusals of ``key`` within the window (at most the ``keep`` it was added with)."""
        times = self._times.get(key)
        if times is None:
            return 0
        horizon = time.monotonic() - self._window
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def add(self, key: str, keep: int) -> None:
        """One more refusal of ``key``; only the last ``keep`` (its limit) are remembered."""
        times = self._times.get(key)
        if times is None or times.maxlen != keep:
            times = self._times[key] = deque(times or (), maxlen=keep)
        times.append(time.monotonic())
        self._times.move_to_end(key)
        while len(self._times) > self._max_keys:
            self._times.popitem(last=False)
