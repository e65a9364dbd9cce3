"""A cache of upstream answers shared by every caller, with a short time-to-live and single flight.

Many dashboards polling at once cost one upstream load per key and TTL: the first miss starts the
load, concurrent misses await the same load, and a failed load is shared by its waiters but not
kept (the next request tries again). A TTL of 0 shares nothing: each call loads on its own (the
benchmark's baseline).

Example::

    cache = SharedCache[str, Snapshot](ttl=10)
    snapshot = await cache.get("1h", lambda: load("1h"))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedCache(Generic[K, V]):
    """Values by key, each loaded at most once per ``ttl`` seconds however many callers ask."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._fresh: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value of ``key``: kept if younger than the TTL, else the running load's, else a new load's."""
        if self.ttl <= 0:
            return await load()
        kept = self._fresh.get(key)
        if kept is not None and time.monotonic() - kept[0] < self.ttl:
            return kept[1]
        running = self._loading.get(key)
        if running is None:
            running = asyncio.ensure_future(self._load(key, load))
            self._loading[key] = running
        # shield: one waiter going away (a closed connection) does not cancel the others' load
        return await asyncio.shield(running)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await load()
            self._fresh[key] = (time.monotonic(), value)
            return value
        finally:
            del self._loading[key]
