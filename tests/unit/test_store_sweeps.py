"""The periodic re-read of Prefect's event store (sms_plugin/telemetry/store_sweeps.py): the window
moves with each pass that succeeded, and stays where it was after one that failed."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sms_plugin.telemetry.store_sweeps import sweep_store

MARGIN = timedelta(seconds=60)


async def sweeps(passes: int, *, failing: Collection[int] = ()) -> tuple[datetime, list[tuple[datetime, datetime]]]:
    """Runs ``sweep_store`` for ``passes`` passes (failing those numbered in ``failing``); returns
    the first ``since`` and each pass's (since, the time it was called)."""
    seen: list[tuple[datetime, datetime]] = []
    done = asyncio.Event()

    async def read_since(since: datetime) -> None:
        seen.append((since, datetime.now(UTC)))
        if len(seen) == passes:
            done.set()
        if len(seen) in failing:
            raise ConnectionError("Prefect went away")

    first = datetime.now(UTC) - timedelta(hours=1)
    task = asyncio.create_task(sweep_store(read_since, first, every=0.01, margin=MARGIN, first_pauses=(0.0,)))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    return first, seen


async def test_each_pass_reads_from_the_last_ones_start_less_the_margin():
    first, seen = await sweeps(3)
    assert seen[0][0] == first
    for (_, called_before), (since, _) in zip(seen, seen[1:]):
        assert called_before - MARGIN - timedelta(seconds=1) <= since <= called_before - MARGIN


async def test_a_failed_pass_is_read_again_by_the_next():
    first, seen = await sweeps(4, failing={2})
    assert seen[2][0] == seen[1][0]  # the span of the failed pass is read again
    assert seen[3][0] > seen[2][0]
    assert seen[0][0] == first


async def test_the_window_never_moves_back():
    first = datetime.now(UTC) + timedelta(minutes=5)  # a position ahead of the clock
    seen: list[datetime] = []

    async def read_since(since: datetime) -> None:
        seen.append(since)

    task = asyncio.create_task(sweep_store(read_since, first, every=0.01, margin=MARGIN))
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(seen) >= 2 and set(seen) == {first}
