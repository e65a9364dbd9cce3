"""Run heartbeats: a running flow keeps its run record's ``heartbeat_at`` fresh, so that the
reaper can tell a live run from one whose worker died (:mod:`sms_plugin.reaper`).

The runs of one process and event loop share one writer: every ``SMS_HEARTBEAT_SECONDS`` it
stamps all of them with one UPDATE, instead of a commit per run (an sms worker runs hundreds at
once). A run is stamped as soon as it joins::

    async with heartbeat(catalog, flow_run_id):
        ...  # the script runs
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sms_plugin.catalog import Catalog, touch_heartbeats
from sms_plugin.settings import current


def heartbeat_seconds() -> float:
    """How often a running flow writes its heartbeat (``SMS_HEARTBEAT_SECONDS``, default 10)."""
    return current().worker.heartbeat_seconds


class _Writer:
    """Stamps the heartbeats of the runs of one catalog in one event loop."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.runs: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    async def stamp(self, runs: set[str]) -> None:
        await self.catalog.aio.run(touch_heartbeats, set(runs), datetime.now(UTC))

    async def beat(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds())
            await self.stamp(self.runs)


_writers: dict[tuple[int, asyncio.AbstractEventLoop], _Writer] = {}


@contextlib.asynccontextmanager
async def heartbeat(catalog: Catalog, flow_run_id: str) -> AsyncIterator[None]:
    """Keeps the run's heartbeat fresh until the block ends."""
    key = (id(catalog), asyncio.get_running_loop())
    for stale in [k for k in _writers if k[1].is_closed()]:  # a loop closed under a run: its writer is dead
        del _writers[stale]
    writer = _writers.setdefault(key, _Writer(catalog))
    await writer.stamp({flow_run_id})
    writer.runs.add(flow_run_id)
    if writer.task is None:
        writer.task = asyncio.create_task(writer.beat())
    try:
        yield
    finally:
        writer.runs.discard(flow_run_id)
        if not writer.runs and writer.task is not None:
            writer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer.task
            if writer.runs:  # another run joined while the writer stopped
                writer.task = asyncio.create_task(writer.beat())
            else:
                writer.task = None
                _writers.pop(key, None)
