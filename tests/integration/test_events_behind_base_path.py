"""Prefect's stored events read page after page from a server under a base path (``/prefect/api``,
as behind the gateway and in the HA topology): Prefect's next-page link leaves the base path out,
SMS's reader (the exporter's rebuild, the publisher's catch-up) does not follow it as it is."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect import get_client

from infra.testbed.prefect_server import PrefectServer
from sms_plugin.telemetry.sources import stored_events
from tests.conftest import _started, talking_to

pytestmark = pytest.mark.integration

EVENTS = 120
"""More than two pages of Prefect's events filter (50 a page)."""


@pytest.fixture(scope="module")
def prefixed_prefect() -> Iterator[PrefectServer]:
    with talking_to(_started(PrefectServer(base_path="/prefect"))) as peer:
        yield peer


async def test_more_than_a_page_of_events_is_read_behind_a_base_path(prefixed_prefect):
    name = f"sms.test.paged.{uuid.uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(minutes=1)
    sent = [
        {"id": str(uuid.uuid4()), "occurred": (since + timedelta(milliseconds=index)).isoformat(), "event": name,
         "resource": {"prefect.resource.id": "sms.test"}}
        for index in range(EVENTS)
    ]
    reply = httpx.post(f"{prefixed_prefect.api_url}/events", json=sent, timeout=30)
    assert reply.status_code == 204, reply.text

    async with get_client() as client:
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # Prefect stores events a few seconds after it takes them
            got = [str(event.id) async for event in stored_events(client, name, since)]
            if len(got) >= EVENTS or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(1)
    assert got == [event["id"] for event in sent]
