"""Knowing when the log lines of one run have reached Prefect, while other runs keep logging.

A run ends (Completed, Failed) only after its log lines are stored, so that whoever sees the run
end can read its whole output. A process of its own simply drains Prefect's log service; the sms
worker cannot, the service is shared by hundreds of runs. And the queue's own counter cannot tell
either: Prefect's batched services never mark items done.

:mod:`sms_plugin.worker.prefect_hooks` wraps the service's ``send`` and ``_handle_batch`` with
:func:`_count_queued` and :func:`_count_handled`, which count the records queued for Prefect's API
log service and the records it has handled (sent, or given up on). The service handles its queue in order, so a run whose last line
was record number *n* has all its lines stored once *n* records are handled::

    target = queued()          # after the run's last log line
    await handled(target, timeout=30)
"""

from __future__ import annotations

import asyncio
import functools
import threading

from prefect.logging.handlers import APILogWorker

_lock = threading.Lock()
_queued = 0
_handled = 0


def queued() -> int:
    """How many records this process has queued for Prefect's API so far."""
    return _queued


async def handled(target: int, timeout: float) -> bool:
    """Waits until ``target`` records have been handled; False if ``timeout`` seconds passed first."""
    deadline = asyncio.get_running_loop().time() + timeout
    while _handled < target:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _count_queued(send):  # noqa: ANN001, ANN202 - wraps Prefect's method as it is
    @functools.wraps(send)
    def counting(self: APILogWorker, item: object) -> None:
        global _queued
        with _lock:  # the queue's order and this count must agree
            send(self, item)
            _queued += 1

    return counting


def _count_handled(handle_batch):  # noqa: ANN001, ANN202 - wraps Prefect's method as it is
    @functools.wraps(handle_batch)
    async def counting(self: APILogWorker, items: list[bytes]) -> None:
        global _handled
        try:
            await handle_batch(self, items)
        finally:
            _handled += len(items)

    return counting

