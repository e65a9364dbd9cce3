"""Counting the log records of Prefect's API log service, which handles its queue in order."""

from __future__ import annotations

import pytest

from sms_plugin.worker import log_delivery


class OrderedService:
    """Stands in for Prefect's APILogWorker: a queue handled in order, in batches."""

    def __init__(self) -> None:
        self.queue: list[str] = []

    def send(self, item: str) -> None:
        self.queue.append(item)

    async def _handle_batch(self, items: list[str]) -> None:
        if "poison" in items:
            raise RuntimeError("the API refused the batch")


OrderedService.send = log_delivery._count_queued(OrderedService.send)  # type: ignore[method-assign]
OrderedService._handle_batch = log_delivery._count_handled(OrderedService._handle_batch)  # type: ignore[method-assign]


async def test_a_run_waits_for_its_own_records_not_for_an_empty_queue():
    service = OrderedService()
    service.send("run A line 1")
    service.send("run A line 2")
    mine = log_delivery.queued()
    service.send("run B line 1")  # another run keeps logging

    assert not await log_delivery.handled(mine, timeout=0.05)
    await service._handle_batch(service.queue[:1])
    assert not await log_delivery.handled(mine, timeout=0.05)
    await service._handle_batch(service.queue[1:2])
    assert await log_delivery.handled(mine, timeout=0.05)  # run B's line is still queued
    assert not await log_delivery.handled(log_delivery.queued(), timeout=0.05)
    await service._handle_batch(service.queue[2:])
    assert await log_delivery.handled(log_delivery.queued(), timeout=0.05)


async def test_a_refused_batch_counts_as_handled():
    service = OrderedService()
    service.send("poison")
    mine = log_delivery.queued()
    with pytest.raises(RuntimeError):
        await service._handle_batch(service.queue)
    assert await log_delivery.handled(mine, timeout=0.05)

