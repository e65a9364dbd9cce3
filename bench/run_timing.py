"""What the run benchmarks (worker_scale.py, ha.py) share: polling, run states, percentiles, and
the start latency of a run (request → the script's first instruction, which writes a timestamp)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from sms_plugin import runs
from sms_plugin.catalog import Catalog

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
STAMP_FIRST = 'date +%s.%N > "$1"\n'
"""A script whose first instruction writes the time to the file named by its argument."""


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 of ``samples``."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def until(check: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Polls ``check`` (sync or async) until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(interval)
    return False


async def states(ids: list[str]) -> dict[str, str]:
    """Run id → Prefect state type of each of ``ids``."""
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids])), limit=len(ids)
        )
    return {str(r.id): r.state.type.value if r.state else "NONE" for r in found}


async def all_final(ids: list[str]) -> bool:
    found = await states(ids)
    return len(found) == len(ids) and all(s in FINAL for s in found.values())


async def start_latency(catalog: Catalog, name: str, count: int, stamps: Path) -> list[float]:
    """Seconds from the start request to the first instruction of ``count`` runs of ``name`` (a
    :data:`STAMP_FIRST` script), one after another; ``stamps``: a folder the host's user can write."""
    samples = []
    for _ in range(count):
        stamp = stamps / uuid.uuid4().hex
        requested = time.time()
        run_id = await runs.start(catalog, name, args=[str(stamp)], trigger="cli", user="bench")
        if not await until(lambda: stamp.exists() and stamp.read_text().strip(), 120):
            raise RuntimeError(f"run {run_id} did not start within 120 s")
        samples.append(float(stamp.read_text()) - requested)
        await until(lambda: all_final([run_id]), 120, 0.1)
    return samples
