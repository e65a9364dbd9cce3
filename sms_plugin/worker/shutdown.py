"""Stopping a worker that has runs in flight: cancel them, see them Cancelled, then stop.

On SIGINT or SIGTERM, :func:`serve` asks Prefect to cancel each run the worker executes (state
Cancelling, as ``sms stop`` does), while the worker is still fully up: its cancellation path
kills the run's process group on its host and the run ends Cancelled, with the log lines "the
worker is stopping: cancelling this run" and "stopped: process group N killed on HOST". It
waits until every run is in a final state (at most ``stop_seconds``), then stops the worker.

Example::

    await serve(SMSWorker(work_pool_name="sms"), stop_seconds=30, printer=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelling

STOP_MESSAGE = "the worker is stopping: cancelling this run"
POLL_SECONDS = 0.5


class StoppableWorker(Protocol):
    """A Prefect worker that knows which flow runs it is executing."""

    client: PrefectClient

    def runs_in_flight(self) -> list[UUID]: ...

    def get_flow_run_logger(self, flow_run: FlowRun) -> Any: ...

    async def start(self, *, printer: Callable[..., None]) -> None: ...


async def serve(worker: StoppableWorker, *, stop_seconds: float, printer: Callable[..., None]) -> None:
    """Runs ``worker`` until SIGINT or SIGTERM, then cancels its runs (bounded) and stops it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(worker.start(printer=printer))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            return running.result()
        printer(f"Stopping: cancelling the runs in flight (waiting at most {stop_seconds:g} s)...")
        left = await cancel_runs_in_flight(worker, stop_seconds)
        if left:
            printer(f"{len(left)} run(s) not Cancelled within {stop_seconds:g} s: {', '.join(map(str, left))}")
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        stopped.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def cancel_runs_in_flight(worker: StoppableWorker, timeout: float) -> list[UUID]:
    """Proposes Cancelling for every run ``worker`` executes and waits until each has ended;
    returns the runs still not ended after ``timeout`` seconds."""
    ids = worker.runs_in_flight()
    for flow_run in await _read(worker.client, ids):
        if flow_run.state is not None and flow_run.state.is_final():
            continue
        worker.get_flow_run_logger(flow_run).warning(STOP_MESSAGE)
        await worker.client.set_flow_run_state(flow_run.id, Cancelling(message=STOP_MESSAGE), force=True)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = [run.id for run in await _read(worker.client, ids) if run.state is None or not run.state.is_final()]
        if not left or asyncio.get_running_loop().time() >= deadline:
            return left
        await asyncio.sleep(POLL_SECONDS)


async def _read(client: PrefectClient, ids: list[UUID]) -> list[FlowRun]:
    if not ids:
        return []
    return await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
