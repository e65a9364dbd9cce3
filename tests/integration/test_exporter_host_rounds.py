"""The exporter's host checks against real hosts: a reachable host (the test bed's sshd) shows
``sms_host_up`` while other hosts' checks are still waiting (a real ``sms exporter`` process); a
host that does not answer reads down at the exporter's check time-out, not at its own (longer)
connect time-out; a removed host's gauge goes when the next round starts; a host without a gauge
yet is checked before the others."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect import get_client

from infra.testbed.exporter import ExporterProcess
from infra.testbed.ports import free_port
from sms_plugin import hosts
from sms_plugin.host_kinds.registry import stored_hosts
from sms_plugin.telemetry.exporter import _CHECK_TIMEOUT_SECONDS, Exporter, ExporterSettings
from tests.integration.conftest import block_of, until

pytestmark = pytest.mark.integration

SILENT_HOSTS = 16
"""More than asyncio's default thread pool holds on a small machine (min(32, CPUs + 4))."""
SILENT_CONNECT_TIMEOUT = 60.0
"""The silent hosts' own connect time-out: longer than the exporter's check time-out."""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose kernel completes every TCP connection and nothing ever answers (no
    SSH banner): an SSH check of it waits for its whole time-out."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server.getsockname()[1]


async def remove(names: set[str]) -> None:
    async with get_client() as client:
        for name, stored in (await stored_hosts(client)).items():
            if name in names:
                await client.delete_block_document(stored.document_id)


def gauges(exporter: ExporterProcess, names: list[str]) -> dict[str, float | None]:
    return {name: exporter.value("sms_host_up", host=name) for name in names}


async def test_each_hosts_gauge_is_set_when_its_own_check_ends(prefect_server, ssh_server, silent_port):
    suffix = uuid.uuid4().hex[:8]
    silent = [f"rounds-silent-{n}-{suffix}" for n in range(SILENT_HOSTS)]  # checked before the reachable one
    reachable = f"rounds-up-{suffix}"
    added: set[str] = set()
    try:
        for name in silent:
            await hosts.add(name, block_of(ssh_server, address="127.0.0.1", port=silent_port,
                                           connect_timeout=SILENT_CONNECT_TIMEOUT))
            added.add(name)
        await hosts.add(reachable, block_of(ssh_server))
        added.add(reachable)
        with ExporterProcess(prefect_server.api_url, free_port(), SMS_EXPORTER_PARALLEL_CHECKS="20") as exporter:
            started = time.monotonic()
            seen = await until(lambda: exporter.value("sms_host_up", host=reachable) is not None, timeout=20)
            up_after = time.monotonic() - started
            silent_then = gauges(exporter, silent)
            assert seen, f"no sms_host_up for {reachable} within 20 s"
            assert exporter.value("sms_host_up", host=reachable) == 1.0
            assert silent_then == dict.fromkeys(silent), f"the silent hosts' checks had ended: {silent_then}"

            await remove({reachable})
            added.discard(reachable)
            down = await until(lambda: set(gauges(exporter, silent).values()) == {0.0}, timeout=_CHECK_TIMEOUT_SECONDS + 15)
            down_after = time.monotonic() - started
            assert down, f"the silent hosts do not read down: {gauges(exporter, silent)}"
            assert down_after < SILENT_CONNECT_TIMEOUT, "a silent host was reported at its own time-out, not the exporter's"
            gone = await until(lambda: exporter.value("sms_host_up", host=reachable) is None, timeout=15)
            assert gone, f"the removed host {reachable} still has a gauge"
            print(f"reachable host up after {up_after:.1f} s; silent hosts down after {down_after:.1f} s")
    finally:
        await remove(added)


async def test_a_host_without_a_gauge_is_checked_before_the_others(prefect_server, ssh_server, silent_port):
    """One check at a time; the silent host's name comes first, and its stale gauge (1) must still be
    there when the new host's appears: the new host was not queued behind it."""
    suffix = uuid.uuid4().hex[:8]
    silent, new = f"rounds-a-silent-{suffix}", f"rounds-z-new-{suffix}"
    exporter = Exporter(ExporterSettings(parallel_checks=1))
    try:
        await hosts.add(silent, block_of(ssh_server, address="127.0.0.1", port=silent_port, connect_timeout=3))
        await hosts.add(new, block_of(ssh_server))
        for host in await hosts.listing():  # every other host of the session's Prefect has a gauge already
            if host.name != new:
                exporter.service.set_one(exporter.service.host_up, host.name, 1.0)
        probing = asyncio.create_task(exporter.probe())
        try:
            seen = await until(lambda: shown(exporter, new) is not None, timeout=10, interval=0.05)
            silent_then = shown(exporter, silent)
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        assert seen, f"the new host {new} was not checked within 10 s"
        assert shown(exporter, new) == 1.0
        assert silent_then == 1.0, "the silent host (known, first by name) was checked before the new host"
    finally:
        await remove({silent, new})


def shown(exporter: Exporter, name: str) -> float | None:
    """An in-process exporter's ``sms_host_up`` of host ``name`` (None: no series)."""
    return exporter.service.registry.get_sample_value("sms_host_up", {"host": name})


def test_the_silent_port_really_is_silent(silent_port: Any) -> None:
    """The peer the test above relies on: a connection is accepted and no byte arrives."""
    with socket.create_connection(("127.0.0.1", silent_port), timeout=2) as connection:
        connection.settimeout(1)
        with pytest.raises(TimeoutError):
            connection.recv(1)
