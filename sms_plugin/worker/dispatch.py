"""Event-driven dispatch: the worker hears of a new scheduled run of its pool at once.

Prefect announces every state change as an event (``prefect.flow-run.Scheduled`` when a run is
created, ``AwaitingRetry`` and ``AwaitingConcurrencySlot`` when it is rescheduled), related to the
run's work pool. :func:`watch_scheduled_runs` follows those events over one websocket and calls
``wake`` for each; the worker then polls its pool at once instead of at the next poll interval.
Polling goes on regardless, so a lost event stream only costs latency, never a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

SCHEDULED_EVENTS = [
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.AwaitingRetry",
    "prefect.flow-run.AwaitingConcurrencySlot",
]
RECONNECT_SECONDS = 5.0

_log = logging.getLogger(__name__)


def scheduled_runs_filter(work_pool_id: UUID) -> EventFilter:
    """Events of runs of work pool ``work_pool_id`` that became due to be picked up."""
    return EventFilter(
        event=EventNameFilter(name=SCHEDULED_EVENTS),
        any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{work_pool_id}"]),
    )


async def watch_scheduled_runs(work_pool_id: UUID, wake: Callable[[], None]) -> None:
    """Calls ``wake()`` for every scheduled-run event of the pool, reconnecting for ever."""
    while True:
        try:
            async with get_events_subscriber(filter=scheduled_runs_filter(work_pool_id)) as subscriber:
                wake()  # events missed while (re)connecting
                async for _event in subscriber:
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the stream is an optimisation; polling goes on
            _log.warning("event stream lost (%s); polling only, reconnecting in %s s", error, RECONNECT_SECONDS)
        await asyncio.sleep(RECONNECT_SECONDS)
