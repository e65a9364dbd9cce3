"""The ``sms`` worker: many runs in one process against the real sshd, cancelling one run among
many, losing the worker (SIGKILL) with runs in flight, two workers sharing a pool. Real Prefect
server on PostgreSQL (SQLite answers 503 under hundreds of concurrent runs), real sshd, workers
as subprocesses (``prefect worker start --type sms``).

The loads are CI-sized (``tests/load.py``): 40 concurrent runs (more than ``SMS_WORKER_STARTING``
takes through starting at once), 40 runs shared by two workers of at most 25 each, one cancelled
among 20. ``SMS_FULL_LOAD=1`` runs the full 200, 100 (two workers of 60) and 50."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from flows.housekeeping import housekeeping
from infra.testbed.prefect_worker import PrefectWorker
from infra.testbed.process import process_tree
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec, get_run, list_audit
from sms_plugin.errors import NotFound
from infra.testbed.prefect_server import PrefectServer
from tests.conftest import _started, talking_to
from tests.integration.conftest import alive, block_of, until
from tests.load import scaled

pytestmark = pytest.mark.integration

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
CONCURRENT = scaled(40, 200)
"""Runs at once on one worker: above ``SMS_WORKER_STARTING`` (32), so some wait in Pending."""
SHARED, PER_WORKER = scaled(40, 100), scaled(25, 60)
"""Runs two workers share; each takes at most PER_WORKER at once, so neither can take them all."""
CANCEL_AMONG = scaled(20, 50)
"""Runs in flight when one of them is cancelled."""


def _env(**extra: str) -> dict[str, str]:
    return {**{k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}, **extra}


async def _sms_pool(name: str) -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=name, type="sms"))


@pytest.fixture(scope="module")
def scale_prefect(postgresql) -> Iterator[PrefectServer]:
    """A Prefect server on PostgreSQL that this module talks to."""
    with talking_to(_started(PrefectServer(database_url=postgresql.prefect_url))) as server:
        yield server


@pytest.fixture(scope="module")
def catalog(scale_prefect) -> Iterator[Catalog]:
    """The catalog the workers share with this process: SMS_HOME's SQLite file, migrated."""
    opened = Catalog()
    opened.upgrade()
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def sms_pool(scale_prefect) -> Iterator[str]:
    """A work pool of type sms; SMS deploys its scripts there while this module runs."""
    name = f"sms-inproc-{uuid.uuid4().hex[:6]}"
    asyncio.run(_sms_pool(name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", name)
        yield name


@pytest.fixture(scope="module")
def sms_worker(scale_prefect, sms_pool, catalog) -> Iterator[PrefectWorker]:
    """One sms worker on the module's pool, up to 250 runs at once."""
    peer = _started(PrefectWorker(scale_prefect.api_url, pool=sms_pool, worker_type="sms", limit=250, extra_env=_env()))
    yield peer
    peer.stop()


async def _host(ssh_server, sessions: int) -> str:
    name = f"scale-{uuid.uuid4().hex[:6]}"
    await hosts.add(name, block_of(ssh_server, max_parallel_sessions=sessions))
    return name


async def _script(catalog: Catalog, host: str, content: str, **spec: object) -> str:
    name = f"scale-{uuid.uuid4().hex[:6]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host, **spec), content, author="tests")
    return name


async def _start_many(catalog: Catalog, name: str, count: int, args=lambda n: None) -> list[str]:
    """Starts ``count`` runs of script ``name``, a few requests at a time (the test server is SQLite)."""
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> str:
        async with gate:
            return await runs.start(catalog, name, args=args(n), trigger="cli", user="tests")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _flow_runs(ids: list[str]) -> dict[str, FlowRun]:
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids])), limit=len(ids)
        )
    return {str(run.id): run for run in found}


async def _until_final(ids: list[str], timeout: float) -> dict[str, FlowRun]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await _flow_runs(ids)
        done = {i: r for i, r in current.items() if r.state and r.state.type.value in FINAL}
        if len(done) == len(ids) or asyncio.get_running_loop().time() > deadline:
            return current
        await asyncio.sleep(1)


async def test_concurrent_runs_on_one_worker(catalog, ssh_server, sms_worker):
    host = await _host(ssh_server, 250)
    lines = 30
    name = await _script(catalog, host, f'i=1; while [ $i -le {lines} ]; do echo "line $i of $1"; i=$((i+1)); done\nsleep 2\nexit $(($1 % 4))\n')
    ids = await _start_many(catalog, name, CONCURRENT, args=lambda n: [str(n)])

    final = await _until_final(ids, 240)

    states = {run_id: (run.state.type.value if run.state else None) for run_id, run in final.items()}
    assert all(s in FINAL for s in states.values()), sorted(states.values())
    infra = {run.infrastructure_pid for run in final.values()}
    assert len(infra) == 1 and next(iter(infra)).startswith("sms:"), infra  # all in the one worker process
    for n, run_id in enumerate(ids):
        expected = n % 4
        assert states[run_id] == ("COMPLETED" if expected == 0 else "FAILED"), (n, states[run_id], final[run_id].state.message)
        with catalog.session() as session:
            assert get_run(session, run_id).exit_code == expected
        messages = [line.message async for line in runs.logs(run_id)]
        output = [text for message in messages for text in message.splitlines() if text.startswith("line ")]
        assert output == [f"line {i} of {n}" for i in range(1, lines + 1)], (n, output)  # complete, in order, its own
        assert not [m for m in messages if "still on their way" in m], n  # stored before the run ended


async def test_cancelling_one_of_many_runs(catalog, ssh_server, sms_worker):
    host = await _host(ssh_server, 60)
    marker = str(uuid.uuid4().int % 10**6 + 5 * 10**6)
    quick = await _script(catalog, host, "echo started\nsleep 8\necho done\n")
    slow = await _script(catalog, host, f"sleep {marker} &\necho started\nsleep {marker}\n", kill_grace_seconds=1)
    victim = await runs.start(catalog, slow, trigger="cli", user="tests")
    rest = await _start_many(catalog, quick, CANCEL_AMONG - 1)
    assert await until(lambda: len(alive(ssh_server, f"sleep {marker}")) >= 2, 60), "the victim never started"

    await runs.stop(victim)

    assert await until(lambda: not alive(ssh_server, f"sleep {marker}"), 10), alive(ssh_server, f"sleep {marker}")
    final = await _until_final([victim, *rest], 120)
    assert final[victim].state.type.value == "CANCELLED", final[victim].state
    assert [final[i].state.type.value for i in rest] == ["COMPLETED"] * (CANCEL_AMONG - 1)
    # The on_cancellation hook ran (it reaps what is left: nothing, here).
    with catalog.session() as session:
        actors = [e.actor for e in list_audit(session, object_name=victim) if e.action == "run.reap"]
    assert any("on_cancelling hook" in actor for actor in actors), actors
    # Prefect's flow-run heartbeats (one emitter thread in the worker): the first is sent at start.
    async def all_beat() -> bool:
        return await _heartbeats([victim, *rest]) == CANCEL_AMONG

    assert await until(all_beat, 30), f"{await _heartbeats([victim, *rest])} of {CANCEL_AMONG} runs sent a heartbeat"


async def _heartbeats(ids: list[str]) -> int:
    """How many of these runs have sent a ``prefect.flow-run.heartbeat`` event."""
    event_filter = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{i}" for i in ids]),
        occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(hours=1)),
    )
    async with get_client() as client:
        page = await client.read_events(filter=event_filter, limit=50)
        seen = {event.resource.id for event in page.events}
        while page.next_page:
            page = await client.read_events_page(str(page.next_page))
            seen |= {event.resource.id for event in page.events}
    return len(seen)


async def test_sigkill_of_the_worker_with_20_runs(catalog, ssh_server, scale_prefect, monkeypatch):
    """Worker lost: its runs' heartbeats stop, housekeeping marks them Crashed and kills them."""
    monkeypatch.setenv("SMS_HEARTBEAT_SECONDS", "1")  # the reaper uses the same staleness rule
    pool = f"sms-kill-{uuid.uuid4().hex[:6]}"
    await _sms_pool(pool)
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    worker = _started(PrefectWorker(scale_prefect.api_url, pool=pool, worker_type="sms", extra_env=_env(SMS_HEARTBEAT_SECONDS="1")))
    try:
        host = await _host(ssh_server, 30)
        marker = str(uuid.uuid4().int % 10**6 + 6 * 10**6)
        name = await _script(catalog, host, f"sleep {marker} &\necho started\nsleep {marker}\n", kill_grace_seconds=1)
        ids = await _start_many(catalog, name, 20)
        assert await until(lambda: len(alive(ssh_server, f"sleep {marker}")) >= 40, 90), "not all 20 started"
        for pid in process_tree(worker.pid):
            os.kill(pid, signal.SIGKILL)
        lost_at = asyncio.get_running_loop().time()
    finally:
        worker.stop()
    assert alive(ssh_server, f"sleep {marker}"), "the scripts run on until reaped"

    async def all_crashed() -> bool:
        await housekeeping()  # what the every-30s housekeeping deployment runs
        states = {r.state.type.value for r in (await _flow_runs(ids)).values()}
        return states == {"CRASHED"}

    assert await until(all_crashed, 90, interval=2)
    assert await until(lambda: not alive(ssh_server, f"sleep {marker}"), 15), alive(ssh_server, f"sleep {marker}")
    print(f"sms worker SIGKILL → 20 runs Crashed, scripts gone after {asyncio.get_running_loop().time() - lost_at:.1f} s")
    for run_id in ids:
        with catalog.session() as session:
            reasons = [e.detail["reason"] for e in list_audit(session, object_name=run_id) if e.action == "run.reap"]
        assert any("no heartbeat" in reason for reason in reasons), (run_id, reasons)


async def test_two_workers_share_the_runs_each_exactly_once(catalog, scale_prefect, ssh_server, monkeypatch):
    pool = f"sms-pair-{uuid.uuid4().hex[:6]}"
    await _sms_pool(pool)
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    marker = Path(f"/tmp/sms-exactly-once-{uuid.uuid4().hex}")
    # Each worker takes at most PER_WORKER runs at once, so neither can take all SHARED alone.
    workers = [
        _started(PrefectWorker(scale_prefect.api_url, pool=pool, worker_type="sms", limit=PER_WORKER, extra_env=_env()))
        for _ in range(2)
    ]
    try:
        host = await _host(ssh_server, 120)
        name = await _script(catalog, host, f'echo "$SMS_RUN_ID" >> {marker}\nsleep 3\n')
        ids = await _start_many(catalog, name, SHARED)
        final = await _until_final(ids, 240)
    finally:
        for worker in workers:
            worker.stop()
    try:
        written = marker.read_text().split()
    finally:
        marker.unlink(missing_ok=True)

    assert [final[i].state.type.value for i in ids] == ["COMPLETED"] * SHARED
    assert sorted(written) == sorted(ids), "every run's script ran exactly once"
    with catalog.session() as session:
        assert all(get_run(session, i).exit_code == 0 for i in ids)
    infrastructure = {final[i].infrastructure_pid for i in ids}
    assert len(infrastructure) == 2, infrastructure  # both workers took part


async def _runs_held_pending(catalog, ssh_server, worker: PrefectWorker, count: int) -> tuple[list[str], str]:
    """Starts ``count`` runs of a long script on a host of one session, on a worker that starts one
    run at a time (SMS_WORKER_STARTING=1): the first runs its script, the second waits for the
    host's session, holding the start slot, and the rest wait Pending in the worker for that
    slot. Returns the run ids and the script's marker once ``count - 2`` runs are Pending."""
    host = await _host(ssh_server, 1)
    marker = str(uuid.uuid4().int % 10**6 + 7 * 10**6)
    name = await _script(catalog, host, f"sleep {marker}\n", kill_grace_seconds=1)
    ids = await _start_many(catalog, name, count)

    async def held() -> bool:
        states = Counter(r.state.type.value for r in (await _flow_runs(ids)).values() if r.state)
        return states["PENDING"] == count - 2 and states["RUNNING"] == 2 and len(alive(ssh_server, f"sleep {marker}")) == 1

    assert await until(held, 90), Counter(r.state.type.value for r in (await _flow_runs(ids)).values())
    return ids, marker


async def _holding_worker(scale_prefect, monkeypatch) -> PrefectWorker:
    """A pool of its own (this test's scripts deploy there) and a worker on it that starts one run
    at a time; its heartbeats and its runs' every second (the reaper's staleness rule too)."""
    pool = f"sms-held-{uuid.uuid4().hex[:6]}"
    await _sms_pool(pool)
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    monkeypatch.setenv("SMS_HEARTBEAT_SECONDS", "1")
    return _started(PrefectWorker(scale_prefect.api_url, pool=pool, worker_type="sms", extra_env=_env(
        SMS_WORKER_STARTING="1", SMS_HEARTBEAT_SECONDS="1", PREFECT_WORKER_HEARTBEAT_SECONDS="1")))


def _sigkill(worker: PrefectWorker) -> None:
    for pid in process_tree(worker.pid):
        os.kill(pid, signal.SIGKILL)
    worker.halt()


async def _reap_all(ids: list[str], ssh_server, marker: str) -> dict[str, FlowRun]:
    """Housekeeping until every run is terminal and the script is gone from the host."""
    async def done() -> bool:
        await housekeeping()
        final = await _flow_runs(ids)
        return all(r.state.type.value in FINAL for r in final.values()) and not alive(ssh_server, f"sleep {marker}")

    assert await until(done, 90, interval=2), {i: r.state.type.value for i, r in (await _flow_runs(ids)).items()}
    return await _flow_runs(ids)


async def test_a_live_workers_pending_runs_are_left_a_dead_ones_crashed(catalog, ssh_server, scale_prefect, monkeypatch):
    """Runs a worker claimed (Pending) and holds for a start slot are left alone by housekeeping
    while the worker sends heartbeats, however old they are; once it is SIGKILLed and silent for
    SMS_LOST_RUN_SECONDS, housekeeping crashes them (and the two Running ones, by their stale
    run heartbeat). Nothing of the Pending runs ever ran."""
    monkeypatch.setenv("SMS_LOST_RUN_SECONDS", "3")
    worker = await _holding_worker(scale_prefect, monkeypatch)
    try:
        ids, marker = await _runs_held_pending(catalog, ssh_server, worker, 5)
        await asyncio.sleep(5)  # the Pending runs are older than SMS_LOST_RUN_SECONDS
        await housekeeping()
        states = Counter(r.state.type.value for r in (await _flow_runs(ids)).values())
        assert states == Counter(PENDING=3, RUNNING=2), states
        _sigkill(worker)
    finally:
        worker.stop()

    final = await _reap_all(ids, ssh_server, marker)

    pending = [final[i] for i in ids if final[i].state.message and "stopped before it started the run" in final[i].state.message]
    assert len(pending) == 3, {i: (r.state.type.value, r.state.message) for i, r in final.items()}
    assert {r.state.type.value for r in final.values()} == {"CRASHED"}
    assert all(f"its worker {worker.worker_name} stopped" in r.state.message for r in pending)
    with catalog.session() as session:
        for flow_run in pending:
            with pytest.raises(NotFound):
                get_run(session, str(flow_run.id))  # its flow never started: no run record, nothing on a host


async def test_a_worker_restarted_under_its_name_crashes_what_it_left_pending(catalog, ssh_server, scale_prefect, monkeypatch):
    """A worker SIGKILLed and started again under the same name (as systemd does) is alive to
    housekeeping, so the new process crashes the runs the old one left Pending, on its first
    sync with the pool, before housekeeping runs."""
    worker = await _holding_worker(scale_prefect, monkeypatch)
    try:
        ids, marker = await _runs_held_pending(catalog, ssh_server, worker, 4)
        pending = [i for i, r in (await _flow_runs(ids)).items() if r.state.type.value == "PENDING"]
        _sigkill(worker)
        _started(worker)  # the same name

        async def crashed() -> bool:
            return {r.state.type.value for r in (await _flow_runs(pending)).values()} == {"CRASHED"}

        assert await until(crashed, 30), {i: r.state.type.value for i, r in (await _flow_runs(pending)).items()}
        messages = {r.state.message for r in (await _flow_runs(pending)).values()}
        assert messages == {f"SMS reaper: an earlier worker named {worker.worker_name} stopped before it started the run "
                            "(nothing ran on a host)"}, messages
        assert "crashed" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    await _reap_all(ids, ssh_server, marker)
