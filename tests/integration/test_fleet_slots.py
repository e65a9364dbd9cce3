"""A fleet run's host slots against a real Prefect server: many hosts per request, limits made sure
of in one pass, and a full host that waits on its own without ever passing its limit."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from prefect import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder

from sms_plugin import limits
from sms_plugin.fleet.slots import GROUP_HOSTS, BulkSlots

pytestmark = pytest.mark.integration
log = logging.getLogger("test")


def _hosts(count: int) -> list[str]:
    token = uuid.uuid4().hex[:8]
    return [f"slots-{token}-{n:03d}" for n in range(count)]


async def _active(names: list[str]) -> dict[str, int]:
    async with get_client() as client:
        return {name: (await client.read_global_concurrency_limit_by_name(limits.host_limit_name(name))).active_slots
                for name in names}


async def test_thirty_hosts_take_their_slots_in_two_requests(prefect_server):
    hosts = _hosts(30)
    await limits.ensure_host_limits({host: 1 for host in hosts})
    inside = asyncio.Event()
    entered: list[str] = []

    async def one(slots: BulkSlots, host: str) -> None:
        async with slots.held(host, 1, log):
            entered.append(host)
            await inside.wait()

    holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.uuid4())
    async with get_client() as client, BulkSlots(client, holder, log) as slots:
        running = [asyncio.create_task(one(slots, host)) for host in hosts]
        while len(entered) < len(hosts):
            await asyncio.sleep(0.05)
        assert slots.requests == -(-len(hosts) // GROUP_HOSTS) == 2  # one request per group, not per host
        assert await _active(hosts) == {host: 1 for host in hosts}  # each holds exactly its host's slot
        inside.set()
        await asyncio.gather(*running)
    assert await _active(hosts) == {host: 0 for host in hosts}  # every lease given back at the end


async def test_a_full_host_waits_alone_and_its_limit_is_never_passed(prefect_server):
    busy, free = _hosts(2)
    await limits.ensure_host_limits({busy: 1, free: 1})
    order: list[str] = []
    release_busy = asyncio.Event()

    async def single_run() -> None:  # a single run holds the busy host's only slot
        async with limits.host_slot(busy, 1, logger=log):
            order.append("single run in")
            await release_busy.wait()
            assert (await _active([busy]))[busy] == 1
            order.append("single run out")

    holding = asyncio.create_task(single_run())
    while not order:
        await asyncio.sleep(0.05)

    async def fleet_host(slots: BulkSlots, host: str) -> None:
        async with slots.held(host, 1, log):
            order.append(f"{host} in")
            assert (await _active([host]))[host] == 1

    async with get_client() as client, BulkSlots(client, None, log) as slots:
        waiting = asyncio.create_task(fleet_host(slots, busy))
        await fleet_host(slots, free)  # refused together with the busy host, it asked alone and got in
        await asyncio.sleep(1)
        assert f"{busy} in" not in order  # the busy host waits for its slot
        release_busy.set()
        await holding
        await asyncio.wait_for(waiting, 120)
    assert order.index(f"{busy} in") > order.index("single run out")
    assert await _active([busy, free]) == {busy: 0, free: 0}


async def test_ensure_host_limits_creates_and_corrects_in_one_pass(prefect_server):
    present, missing = _hosts(2)
    await limits.ensure_host_limit(present, 3)
    await limits.ensure_host_limits({present: 1, missing: 2})
    async with get_client() as client:
        got = {host: await client.read_global_concurrency_limit_by_name(limits.host_limit_name(host))
               for host in (present, missing)}
    assert {host: (limit.limit, limit.active) for host, limit in got.items()} == {present: (1, True), missing: (2, True)}
