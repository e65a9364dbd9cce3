"""Reading Prefect's event store again while following its live stream.

Prefect's live stream (``/events/out``) keeps at most 256 events waiting for each subscriber and
drops the newer ones while a reader is slower than the events arrive (a burst of runs ending, a
catalog that takes a while to commit). The store keeps every event, some seconds after it happened.
So a reader of the stream that must not miss an event (``sms events``, ``sms exporter``) also reads
the store, every few seconds, over a window that moves with it and skips what it has by id::

    sweeping = asyncio.create_task(sweep_store(read_since, since, every=15.0, margin=timedelta(minutes=1)))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat

log = logging.getLogger("sms.sweeps")  # in `sms events` and in `sms exporter`


async def sweep_store(
    read_since: Callable[[datetime], Awaitable[object]],
    since: datetime,
    *,
    every: float,
    margin: timedelta,
    first_pauses: Iterable[float] = (),
) -> None:
    """Calls ``read_since(since)`` after each of ``first_pauses``, then every ``every`` seconds,
    until cancelled. After a pass that succeeded, the next reads from that pass's start less
    ``margin`` (the time Prefect may take to store an event); after a failed one (logged), from the
    same point again, so no span is left unread."""
    for pause in chain(first_pauses, repeat(every)):
        await asyncio.sleep(pause)
        started = datetime.now(UTC)
        try:
            await read_since(since)
        except Exception as error:  # noqa: BLE001 - the live stream goes on; the next pass reads this span again
            log.warning("reading Prefect's stored events again failed: %s: %s", type(error).__name__, error)
            continue
        since = max(since, started - margin)
