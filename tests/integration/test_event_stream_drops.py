"""``sms events`` and ``sms exporter`` against a real Prefect server whose live stream drops events:
Prefect keeps at most 256 events waiting for a subscriber and drops the rest while the reader is
slow. Both read the store again (``telemetry.store_sweeps``), so every event is appended to the
outbox, and counted, once.

The publisher is made slow the way a busy catalog makes it: another connection holds the SQLite
catalog's write lock while a burst of large events (more than the socket buffers and the server's
queue hold together) is emitted; its first append waits for the lock meanwhile. The exporter is
made slow by freezing its event loop (as a long pause of its process would) during the burst.
The bursts go to a Prefect server and a catalog of this module's own, so that no other test's
publisher or exporter reads them."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest
from prefect.events import Event
from prefect.events.clients import get_events_client
from sqlalchemy import select

from infra.testbed.prefect_server import PrefectServer
from sms_plugin import run_events
from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.events.publisher import Publisher, PublisherSettings
from sms_plugin.events.run_source import event_id
from sms_plugin.telemetry import exporter as exporter_module
from sms_plugin.telemetry.exporter import Exporter, ExporterSettings
from tests.conftest import _started, talking_to
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

BURST = 600
PADDING = 40_000
"""Bytes of payload per event: the burst (24 MB) is more than loopback's socket buffers hold."""
HOLD_SECONDS = 10.0
"""How long the catalog stays locked (below its 30 s busy timeout: the append waits, it does not fail)."""


@pytest.fixture(scope="module")
def own_prefect() -> Iterator[PrefectServer]:
    with talking_to(_started(PrefectServer())) as peer:
        yield peer


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


async def test_events_the_live_stream_dropped_reach_the_outbox(own_prefect, own_catalog):
    catalog = own_catalog
    publisher = Publisher(catalog, PublisherSettings("127.0.0.1:9", 100_000, 5.0, None))  # Kafka unused here
    following = asyncio.create_task(publisher.follow_prefect())
    try:
        probe = f"drops-probe-{uuid.uuid4().hex[:6]}"

        async def probed() -> bool:  # once a probe arrives, the publisher follows the live stream
            await emit([finished_event(probe, exit_code=0, lines={"stdout": 1})])
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


def output_lines(exporter: Exporter, script: str) -> float:
    """``sms_script_output_lines_total`` of ``script`` (stdout), as the exporter serves it."""
    for family in exporter.served.runs.registry.collect():
        for sample in family.samples:
            if sample.name == "sms_script_output_lines_total" and sample.labels.get("script") == script:
                return sample.value
    return 0.0


async def test_the_exporter_counts_events_the_live_stream_dropped(own_prefect, monkeypatch):
    """The re-reads around the subscription are left out and the periodic one made 5 s: the burst
    comes long after the subscription, as it does in a running exporter."""
    monkeypatch.setattr(exporter_module, "_CATCH_UP_SECONDS", ())
    monkeypatch.setattr(exporter_module, "_SWEEP_SECONDS", 5.0)
    await emit([finished_event(f"malformed-{uuid.uuid4().hex[:6]}")])  # no exit code: skipped, not fatal
    exporter = Exporter(ExporterSettings(port=0, source="prefect"))
    following = asyncio.create_task(exporter.follow())
    try:
        probe = f"drops-probe-{uuid.uuid4().hex[:6]}"

        async def probed() -> bool:  # once a probe is counted, the exporter follows the live stream
            await emit([finished_event(probe, exit_code=0, lines={"stdout": 1})])
            return await until(lambda: output_lines(exporter, probe), 2, interval=0.2)

        assert await until(probed, 60), "the exporter did not follow Prefect's stream"
        script = f"drops-{uuid.uuid4().hex[:6]}"
        burst = [finished_event(script, exit_code=0, lines={"stdout": 1}, padding="x" * PADDING) for _ in range(BURST)]
        emitting = threading.Thread(target=lambda: asyncio.run(emit(burst)))
        emitting.start()
        time.sleep(HOLD_SECONDS)  # the exporter's loop (this one) reads nothing meanwhile
        emitting.join()
        assert await until(lambda: output_lines(exporter, script) == BURST, 120, interval=1), \
            f"the exporter counted {output_lines(exporter, script):g} of {BURST} output lines"
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
