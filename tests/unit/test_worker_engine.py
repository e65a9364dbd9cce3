"""The sms worker's adjustments of Prefect's engine, without a server: per-run cancel intent and
the run loop thread."""

from __future__ import annotations

import asyncio
import threading

import prefect.flow_engine

from sms_plugin.worker import engine, prefect_hooks
from sms_plugin.worker.runloop import RunLoop


async def test_cancel_intent_is_the_runs_own():
    prefect_hooks.install()
    seen: dict[str, object] = {}
    cancel_first = engine.RunControl()

    async def run(name: str, control: engine.RunControl) -> None:
        control.bind()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen[name] = prefect.flow_engine._termination_intent()
            raise

    first = asyncio.create_task(run("first", cancel_first))
    second = asyncio.create_task(run("second", engine.RunControl()))
    await asyncio.sleep(0)
    cancel_first.cancel()  # the worker's way: the engine then reports Cancelled
    second.cancel()  # any other interruption: the engine reports Crashed
    await asyncio.gather(first, second, return_exceptions=True)
    assert seen == {"first": "cancel", "second": None}
    assert prefect.flow_engine._termination_intent() is None  # outside any run


async def test_run_loop_runs_in_its_own_thread_and_propagates_cancellation():
    loop = RunLoop("test-runs")
    outcome: list[str] = []

    async def job() -> str:
        outcome.append(threading.current_thread().name)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return "done"

    assert await loop.run(_quick()) == 42
    waiter = asyncio.create_task(loop.run(job()))
    await asyncio.sleep(0.2)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    for _ in range(50):
        if "cancelled" in outcome:
            break
        await asyncio.sleep(0.02)
    assert outcome == ["test-runs", "cancelled"]
    loop.close()


async def _quick() -> int:
    return 42
