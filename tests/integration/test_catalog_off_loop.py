"""The catalog never blocks an event loop: the flow, the heartbeats, the reaper and the gateway reach
it through ``catalog.aio`` (docs/catalog.md), on SQLite and on MariaDB.

- A guard (``loop_guard``) raises when a statement runs on the thread of a running event loop other
  than the tests' own; the flow runs here on a :class:`RunLoop` of its own, as in the sms worker,
  and the gateway on uvicorn's loop in its thread.
- With another connection holding SQLite's write lock for seconds, a running script's output keeps
  arriving, a stop kills it at once, and the gateway keeps answering what needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flows.run_script import run_script
from sms_plugin import hosts
from sms_plugin.catalog import Catalog, ScriptSpec, add_script, get_run, list_audit, list_runs, list_scripts
from sms_plugin.reaper import housekeeping
from sms_plugin.worker.runloop import RunLoop
from tests.integration.conftest import alive, block_of, mariadb_database, until
from tests.integration.gateway_fixtures import gateway, serve  # noqa: F401 - fixture
from tests.integration.loop_guard import BlockingCatalogCall, catalog_off_loops, guarding  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

HOLD_SECONDS = 4.0
"""How long the other connection holds the write lock before the checks (a writer would wait 30 s)."""


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def run_loop() -> Iterator[RunLoop]:
    """An event loop in a thread of its own, where flows run as in the sms worker."""
    loop = RunLoop("sms-runs-test")
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def mariadb_url(mariadb: Any) -> Iterator[str]:
    """A fresh, migrated MariaDB catalog database; dropped at the end."""
    with mariadb_database(mariadb, "sms_loop") as url:
        migrated = Catalog(url)
        migrated.upgrade()
        migrated.dispose()
        yield url


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Iterator[Catalog]:
    """The catalog the flow uses (SMS_DATABASE_URL): the session's SQLite file, or MariaDB."""
    if request.param == "sqlite":
        yield catalog
        return
    url = request.getfixturevalue("mariadb_url")
    monkeypatch.setenv("SMS_DATABASE_URL", url)
    opened = Catalog(url)
    yield opened
    opened.dispose()


async def _script(catalog: Catalog, host: str, content: str) -> str:
    name = _unique("offloop")
    spec = ScriptSpec(name=name, interpreter="bash", host=host, kill_grace_seconds=1)
    await catalog.aio.run(add_script, spec, content=content, author="tests")
    return name


async def _ssh_host(ssh_server: Any) -> str:
    name = _unique("ssh")
    await hosts.add(name, block_of(ssh_server))
    return name


@contextmanager
def _write_lock(catalog: Catalog) -> Iterator[float]:
    """Another connection holds the SQLite file's write lock (BEGIN IMMEDIATE) while the block runs;
    yields when it took it (time.monotonic)."""
    assert catalog.url.get_backend_name() == "sqlite" and catalog.url.database
    other = sqlite3.connect(catalog.url.database, isolation_level=None, timeout=30)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE runs SET notes = notes WHERE 0")
        yield time.monotonic()
        other.execute("ROLLBACK")
    finally:
        other.close()


class _Ticks:
    """How late the loop's 50 ms timers fire: a blocked loop fires them late."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.running = True

    async def tick(self) -> None:
        while self.running:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            self.worst = max(self.worst, time.monotonic() - before - 0.05)


# --------------------------------------------------------------------------- the guard


async def test_the_guard_catches_a_synchronous_catalog_call_on_a_loop(catalog, run_loop):
    async def blocking() -> None:
        with catalog.session() as session:
            list_scripts(session)

    with guarding() as guard:
        with pytest.raises(BlockingCatalogCall, match="sms-runs-test"):
            await run_loop.run(blocking())
        assert isinstance(await run_loop.run(catalog.aio.run(list_scripts)), list)
    assert len(guard.caught) == 1


@pytest.mark.usefixtures("catalog_off_loops")
async def test_flow_and_reaper_query_the_catalog_off_their_loop(backend, ssh_server, run_loop):
    host = await _ssh_host(ssh_server)
    name = await _script(backend, host, 'echo "hello $1"\n')
    state = await run_loop.run(run_script(script=name, args=["there"], return_state=True))
    assert state.is_completed(), state.message
    [record] = await backend.aio.run(list_runs, script_name=name)
    assert (record.exit_code, record.output_tail) == (0, "stdout: hello there")
    assert record.heartbeat_at is not None and record.ended_at is not None
    await run_loop.run(housekeeping(backend))  # the reaper's pass over unfinished runs


@pytest.mark.usefixtures("catalog_off_loops")
async def test_gateway_api_reads_the_catalog_off_its_loop_on_mariadb(keycloak, prefect_server, mariadb_url):
    catalog = Catalog(mariadb_url)
    try:
        with serve(keycloak, catalog) as served:
            async with httpx.AsyncClient(base_url=served.url, headers=served.headers("adam"), timeout=30) as client:
                for path in ("scripts", "runs", "access-rules", "webhooks", "audit-events"):
                    reply = await client.get(f"/api/v1/{path}")
                    assert reply.status_code == 200, (path, reply.text)
                reply = await client.post("/api/v1/access-rules", json={
                    "subject_kind": "user", "subject": "otto", "actions": ["read"], "script_glob": "offloop-*"})
                assert reply.status_code == 201, reply.text
                assert (await client.delete(f"/api/v1/access-rules/{reply.json()['id']}")).status_code == 204
        events = {e.action for e in await catalog.aio.run(list_audit, actor="adam", limit=50)}
        assert {"api.audit.list", "api.rule.add", "api.rule.remove"} <= events
        assert "api.script.list" not in events  # an allowed read of the catalog is not audited
    finally:
        catalog.dispose()


# --------------------------------------------------------------------------- a writer holds the lock


@pytest.mark.usefixtures("catalog_off_loops")
async def test_output_flows_and_stop_kills_while_another_writer_holds_the_lock(
    catalog, ssh_server, run_loop, monkeypatch
):
    monkeypatch.setenv("SMS_HEARTBEAT_SECONDS", "0.3")  # the heartbeat writer meets the lock at once
    host = await _ssh_host(ssh_server)
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    name = await _script(catalog, host, 'while true; do echo "tick $1"; sleep 0.1; done\n')
    output = _Arrivals(f"tick {marker}")
    seen = output.times
    logging.getLogger("prefect.task_runs").addHandler(output)  # each host's execution is a task run
    ticks = _Ticks()
    ticking = asyncio.run_coroutine_threadsafe(ticks.tick(), run_loop.loop)
    flow = asyncio.ensure_future(run_loop.run(run_script(script=name, args=[marker], return_state=True)))
    try:
        assert await until(lambda: len(seen) >= 5, timeout=60), "the script's output never arrived"
        with _write_lock(catalog) as locked_at:
            await asyncio.sleep(HOLD_SECONDS)
            during = [t for t in seen if t >= locked_at]
            gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
            print(f"lock held {HOLD_SECONDS:g} s: {len(during)} output lines, widest gap {max(gaps, default=0):.2f} s")
            assert len(during) >= HOLD_SECONDS / 0.1 / 2, "output stopped while the lock was held"
            assert max(gaps) < 1.0

            stopped_at = time.monotonic()
            flow.cancel()
            assert await until(lambda: not alive(ssh_server, marker), timeout=15), "the stop killed nothing"
            killed_in = time.monotonic() - stopped_at
            print(f"stop to no process left: {killed_in:.2f} s, the lock still held")
            assert killed_in < 5.0
        # a blocked loop fires its timers late, once the lock is gone
        print(f"worst delay of the run loop's 50 ms timers: {ticks.worst:.3f} s")
        assert ticks.worst < 0.5, f"the run loop was blocked for {ticks.worst:.2f} s"
        # the run's end is written once the lock is gone
        [record] = await catalog.aio.run(list_runs, script_name=name)
        assert await until(lambda: _ended(catalog, record.flow_run_id), timeout=30)
        assert record.heartbeat_at is not None
    finally:
        flow.cancel()
        await asyncio.wait([flow], timeout=60)
        logging.getLogger("prefect.task_runs").removeHandler(output)
        ticks.running = False
        ticking.result(timeout=5)


class _Arrivals(logging.Handler):
    """Notes when the run's log lines carrying ``text`` arrive."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.times.append(time.monotonic())


def _ended(catalog: Catalog, run_id: str) -> bool:
    with catalog.session() as session:
        return get_run(session, run_id).ended_at is not None


@pytest.mark.usefixtures("catalog_off_loops")
async def test_gateway_answers_while_a_request_waits_for_the_lock(gateway, catalog):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        with _write_lock(catalog):
            # an unknown webhook: its lookup and the refusal's audit event need the catalog
            waiting = asyncio.ensure_future(client.post("/hooks/wh_0123456789abcdef", content=b"{}"))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            health = await client.get("/healthz")
            answered_in = time.monotonic() - started
            print(f"/healthz answered in {answered_in:.3f} s while a delivery waited for the lock")
            assert health.status_code == 200
            assert answered_in < 1.0
            assert not waiting.done(), "the delivery should be waiting for the catalog"
        refused = await waiting
        assert refused.status_code == 404
