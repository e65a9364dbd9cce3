"""``sms events`` against a real Prefect server whose live stream drops events: Prefect keeps at
most 256 events waiting for a subscriber and drops the rest while the reader is slow. The
publisher reads the store again (``telemetry.store_sweeps``), so every event reaches the outbox.

The reader is made slow the way a busy catalog makes it: another connection holds the SQLite
catalog's write lock while a burst of large events (more than the socket buffers and the server's
queue hold together) is emitted; the publisher's first append waits for the lock meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest
from prefect.events import Event
from prefect.events.clients import get_events_client
from sqlalchemy import select

from sms_plugin import run_events
from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.events.publisher import Publisher, PublisherSettings
from sms_plugin.events.run_source import event_id
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

BURST = 600
PADDING = 40_000
"""Bytes of payload per event: the burst (24 MB) is more than loopback's socket buffers hold."""
HOLD_SECONDS = 10.0
"""How long the catalog stays locked (below its 30 s busy timeout: the append waits, it does not fail)."""


def finished_event(script: str, **payload: Any) -> Event:
    return Event(event=run_events.RUN_FINISHED, payload=payload,
                 resource={"prefect.resource.id": f"sms.run.{uuid.uuid4()}", "sms.script": script})


async def emit(events: list[Event]) -> None:
    async with get_events_client() as client:
        for event in events:
            await client.emit(event)


def outbox_ids(catalog: Catalog, script: str) -> set[str]:
    with catalog.session() as s:
        return set(s.scalars(select(OutboxEvent.id).where(OutboxEvent.key == script)))


@contextmanager
def catalog_locked(catalog: Catalog) -> Iterator[None]:
    """Another connection holds the SQLite catalog's write lock."""
    database = catalog.engine.url.database
    assert database, "the test bed's catalog is an SQLite file"
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


async def test_events_the_live_stream_dropped_reach_the_outbox(catalog, prefect_server):
    publisher = Publisher(catalog, PublisherSettings("127.0.0.1:9", 100_000, 5.0, None))  # Kafka unused here
    following = asyncio.create_task(publisher.follow_prefect())
    try:
        probe = f"drops-probe-{uuid.uuid4().hex[:6]}"

        async def probed() -> bool:  # once a probe arrives, the publisher follows the live stream
            await emit([finished_event(probe)])
            return await until(lambda: outbox_ids(catalog, probe), 2, interval=0.2)

        assert await until(probed, 60), "the publisher did not follow Prefect's stream"
        script = f"drops-{uuid.uuid4().hex[:6]}"
        burst = [finished_event(script, exit_code=0, padding="x" * PADDING) for _ in range(BURST)]
        with catalog_locked(catalog):
            await emit(burst)
            await asyncio.sleep(HOLD_SECONDS)
        expected = {event_id(event.id) for event in burst}
        assert await until(lambda: outbox_ids(catalog, script) == expected, 120, interval=1), \
            f"{len(expected - outbox_ids(catalog, script))} of {BURST} events never reached the outbox"
    finally:
        publisher.stop()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
