"""The monitoring API's pure parts: the shared cache's single flight, the per-user throttle and the
histogram quantile the overview computes per caller."""

from __future__ import annotations

import asyncio

import pytest

from sms_plugin.gateway.overview import quantile
from sms_plugin.gateway.shared_cache import SharedCache
from sms_plugin.gateway.throttle import Throttle, parse_rate


async def test_fifty_concurrent_misses_cost_one_load_and_a_failure_is_not_kept() -> None:
    cache: SharedCache[str, int] = SharedCache(ttl=60)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return loads

    assert await asyncio.gather(*(cache.get("1h", load) for _ in range(50))) == [1] * 50
    assert await cache.get("1h", load) == 1 and loads == 1

    async def failing() -> int:
        raise RuntimeError("down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await cache.get("6h", failing)
    assert await cache.get("6h", load) == 2, "a failed load is tried again, not kept"


async def test_a_ttl_of_zero_shares_nothing() -> None:
    cache: SharedCache[str, int] = SharedCache(ttl=0)
    calls: list[int] = []

    async def load() -> int:
        calls.append(1)
        return len(calls)

    await asyncio.gather(*(cache.get("1h", load) for _ in range(5)))
    assert len(calls) == 5


def test_throttle_allows_a_burst_then_says_how_long_to_wait_per_user() -> None:
    throttle = Throttle("3/min")
    assert [throttle.wait_seconds("otto") for _ in range(3)] == [0, 0, 0]
    assert 1 <= throttle.wait_seconds("otto") <= 20
    assert throttle.wait_seconds("anna") == 0
    assert parse_rate("60/min") == (60, 60.0) and parse_rate("5/s") == (5, 1.0)


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = {1.0: 1.0, 2.5: 1.0, 5.0: 3.0, float("inf"): 3.0}  # runs of 0.8, 3 and 4 s
    assert quantile(0.5, buckets) == pytest.approx(3.125)
    assert quantile(0.95, buckets) == pytest.approx(4.8125, abs=0.001)
    assert quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {1.0: 0.0, float("inf"): 2.0}) == 1.0, "in the +Inf bucket: the highest finite bound"
