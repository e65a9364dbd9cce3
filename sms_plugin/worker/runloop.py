"""A private asyncio event loop in a thread of its own, where the worker's flow runs execute.

Prefect's flow engine installs a SIGTERM handler (and arms its control listener) only in the main
thread; runs on this loop leave the worker's signal handling alone, and the worker's own polling
and API calls never queue behind the runs' output handling.

Example::

    loop = RunLoop("sms-runs")
    result = await loop.run(some_coroutine())   # awaited from any other event loop
    loop.close()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class RunLoop:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs ``coroutine`` as a task of this loop and waits for it from the caller's loop.
        Cancelling the caller cancels the task (the caller returns at once, the task ends later)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def tasks(self) -> set[asyncio.Task[Any]]:
        """The tasks still pending on this loop (read from another thread: a snapshot)."""
        return asyncio.run_coroutine_threadsafe(_pending(), self.loop).result(timeout=5)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the loop once its current callbacks ran and waits for the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


async def _pending() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current}
