"""A fleet run's host rows, written in batches into a real SQLite catalog: many changes per
transaction, each writer back only once its change is committed, a bad change failing alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.orm import Session

from sms_plugin.catalog import Catalog, host_executions, record_host_execution, record_run, update_host_execution
from sms_plugin.errors import NotFound
from sms_plugin.fleet.writes import BatchedWrites
from tests.unit.test_gateway_sessions import catalog  # noqa: F401 - the fixture: a fresh SQLite catalog

RUN = "6f1c0000-0000-0000-0000-000000000001"
HOSTS = [f"web-{n:03d}" for n in range(100)]


def _run(session: Session) -> None:
    record_run(session, RUN, script_name="rotate", version_number=1, host="100 hosts", trigger="manual", requested_by="ada")
    for host in HOSTS:
        record_host_execution(session, RUN, host)


def _apply(session: Session, host: str, fields: dict[str, Any]) -> None:
    update_host_execution(session, RUN, host, **fields)


def _states(catalog: Catalog) -> dict[str, tuple[str, int | None]]:
    with catalog.session() as session:
        return {row.host: (row.state, row.exit_code) for row in host_executions(session, RUN)}


async def test_a_hundred_hosts_write_their_changes_in_a_few_transactions(catalog):
    with catalog.session() as session:
        _run(session)
    writes = BatchedWrites(catalog, _apply)
    committed: list[str] = []

    async def host(name: str) -> None:
        await writes.write(name, state="running")
        if name == HOSTS[-1]:
            assert _states(catalog)[name][0] == "running"  # back only once committed
        await writes.write(name, state="succeeded", exit_code=0)
        committed.append(name)

    await asyncio.gather(*(host(name) for name in HOSTS))
    assert sorted(committed) == HOSTS
    assert _states(catalog) == {name: ("succeeded", 0) for name in HOSTS}
    assert writes.transactions <= 10, writes.transactions  # 200 changes; one transaction each before


async def test_a_bad_change_fails_its_writer_alone(catalog):
    with catalog.session() as session:
        _run(session)
    writes = BatchedWrites(catalog, _apply)
    results = await asyncio.gather(
        writes.write(HOSTS[0], state="running"),
        writes.write("no-such-host", state="running"),
        writes.write(HOSTS[1], state="running"),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], NotFound)
    states = _states(catalog)
    assert states[HOSTS[0]][0] == states[HOSTS[1]][0] == "running" and states[HOSTS[2]][0] == "pending"


async def test_a_writer_cancelled_while_it_waits_still_has_its_change_written(catalog):
    with catalog.session() as session:
        _run(session)
    writes = BatchedWrites(catalog, _apply)
    first = asyncio.create_task(writes.write(HOSTS[0], state="running"))
    stopped = asyncio.create_task(writes.write(HOSTS[1], state="stopped", exit_code=None))
    await asyncio.sleep(0)
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    await first
    for _ in range(100):
        if _states(catalog)[HOSTS[1]][0] == "stopped":
            break
        await asyncio.sleep(0.02)
    assert _states(catalog)[HOSTS[1]] == ("stopped", None)
