"""Crashes: the flow process or the whole worker dies mid-run. Within a bounded time the run is
Crashed (not Running), nothing of the script is left on the SSH host, and the audit trail says
the reaper killed it. Real Prefect server, real workers of their own (``sms-process``: a process
per run; Prefect's process worker), real sshd."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import uuid
from pathlib import Path

import pytest
from prefect import get_client

from flows.housekeeping import housekeeping
from infra.testbed.process import process_tree
from infra.testbed.prefect_worker import PrefectWorker
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec, get_run, list_audit
from tests.integration.conftest import alive, block_of, until

pytestmark = pytest.mark.integration

SCRIPT = (
    "sleep {m} &\nsetsid sleep {m} &\n(sh -c 'sleep {m} & exit 0' &)\n"
    "trap '' TERM\necho started\nsleep {m}\n"
)


@pytest.fixture
async def crash_host(ssh_server, prefect_server) -> str:
    name = f"crash-{uuid.uuid4().hex[:6]}"
    await hosts.add(name, block_of(ssh_server))
    return name


async def _start(catalog: Catalog, host: str, ssh_server, marker: str) -> str:
    name = f"crashy-{uuid.uuid4().hex[:6]}"
    spec = ScriptSpec(name=name, interpreter="sh", host=host, kill_grace_seconds=1)
    await scripts.add(catalog, spec, SCRIPT.format(m=marker), author="tests")
    run_id = await runs.start(catalog, name, trigger="cli", user="tests")

    def started() -> bool:
        with catalog.session() as session:
            try:
                return get_run(session, run_id).remote_pid is not None
            except Exception:  # noqa: BLE001 - not recorded yet
                return False

    assert await until(started, 90), "the run never started"
    assert await until(lambda: len(alive(ssh_server, f"sleep {marker}")) >= 4, 10)
    return run_id


async def _flow_process(run_id: str) -> int:
    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(run_id))
    return int(str(flow_run.infrastructure_pid).rsplit(":", 1)[-1])


async def _state(run_id: str) -> str:
    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(run_id))
    return flow_run.state.type.value if flow_run.state else "NONE"


async def _state_if_final(run_id: str) -> str | None:
    state = await _state(run_id)
    return state if state in {"CRASHED", "FAILED", "CANCELLED", "COMPLETED"} else None


def _upload(ssh_server, run_id: str) -> Path:
    """The run's upload folder on the SSH host (``~smstest/.sms/run/<run id>``)."""
    return Path(pwd.getpwnam(ssh_server.username).pw_dir) / ".sms" / "run" / run_id


def _reaped(catalog: Catalog, run_id: str):
    with catalog.session() as session:
        events = [e for e in list_audit(session, object_name=run_id) if e.action == "run.reap"]
        record = get_run(session, run_id)
    return events, record


async def test_sigkill_of_the_flow_process(catalog, crash_host, ssh_server, prefect_server, monkeypatch):
    """A process per run (an ``sms-process`` worker of its own): the flow process dies, the worker lives on."""
    pool = f"crash-proc-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    env = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    with PrefectWorker(prefect_server.api_url, pool=pool, worker_type="sms-process", extra_env=env) as worker:
        marker = str(uuid.uuid4().int % 10**6 + 3 * 10**6)
        run_id = await _start(catalog, crash_host, ssh_server, marker)
        assert _upload(ssh_server, run_id).is_dir()
        started = asyncio.get_running_loop().time()
        flow_process = await _flow_process(run_id)
        assert flow_process != worker.pid
        os.kill(flow_process, signal.SIGKILL)

        assert await until(lambda: not alive(ssh_server, f"sleep {marker}"), 60), alive(ssh_server, f"sleep {marker}")
        gone = asyncio.get_running_loop().time() - started
        state = await until(lambda: _state_if_final(run_id), 30)
        await until(lambda: any("killed process group" in e.detail["outcome"] for e in _reaped(catalog, run_id)[0]), 30)
    events, record = _reaped(catalog, run_id)
    print(f"flow process SIGKILL → script gone after {gone:.1f} s; state {state}")
    assert state == "CRASHED"
    # The on_crashed hook (or, if it loses the race, the scheduled housekeeping) did the kill.
    killers = [e for e in events if "killed process group" in e.detail["outcome"]]
    assert killers and killers[0].actor.startswith("sms-reaper") and killers[0].outcome == "ok", (
        [(e.actor, e.detail) for e in events], record.notes
    )
    assert record.ended_at is not None and "sms-reaper" in record.notes
    assert not _upload(ssh_server, run_id).exists()  # the reaper removed the upload too


async def test_loss_of_the_worker_and_its_flow_process(catalog, crash_host, ssh_server, prefect_server, monkeypatch):
    """Machine loss: the worker and the flow process die together; only the heartbeat tells."""
    pool = f"crash-pool-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    env = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    worker = PrefectWorker(prefect_server.api_url, pool=pool, extra_env={**env, "SMS_HEARTBEAT_SECONDS": "1"})
    worker.start()
    try:
        marker = str(uuid.uuid4().int % 10**6 + 4 * 10**6)
        run_id = await _start(catalog, crash_host, ssh_server, marker)
        assert _upload(ssh_server, run_id).is_dir()
        for pid in process_tree(worker.pid):
            os.kill(pid, signal.SIGKILL)
        lost_at = asyncio.get_running_loop().time()
    finally:
        worker.stop()
    await asyncio.sleep(1)
    assert await _state(run_id) == "RUNNING"  # nobody is left to say otherwise
    assert alive(ssh_server, f"sleep {marker}")  # and the script runs on

    monkeypatch.setenv("SMS_HEARTBEAT_SECONDS", "1")  # the reaper uses the same staleness rule

    async def reaped() -> bool:
        await housekeeping()  # what the every-30s housekeeping deployment runs
        return await _state(run_id) == "CRASHED"

    assert await until(reaped, 60, interval=2)
    recovered = asyncio.get_running_loop().time() - lost_at
    assert await until(lambda: not alive(ssh_server, f"sleep {marker}"), 15)
    events, record = _reaped(catalog, run_id)
    print(f"worker loss → run Crashed and script gone after {recovered:.1f} s")
    assert any(e.actor == "sms-reaper" and "no heartbeat" in e.detail["reason"] for e in events)
    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(run_id))
    assert "no heartbeat" in flow_run.state.message
    assert record.ended_at is not None
    assert not _upload(ssh_server, run_id).exists()  # the reaper removed the upload too



async def test_a_running_run_whose_flow_is_lost_before_its_record_or_after_its_end_is_crashed(
        catalog, prefect_server, monkeypatch):
    """A worker lost just after it moved a run to Running, before the flow wrote its run record
    (nothing ran on a host, no heartbeat tells), or after the script's end was recorded but
    before Prefect got the final state: housekeeping crashes both once they have been Running
    (and ended) for SMS_LOST_RUN_SECONDS; a live recorded run, a run ended more recently, or a
    younger one is left alone."""
    from datetime import UTC, datetime, timedelta

    from prefect import Flow
    from prefect.states import Cancelled, Running

    from sms_plugin.catalog import record_run, update_run
    from sms_plugin.deploy import FLOW_NAME
    from sms_plugin.lost_runs import crash_lost_runs

    flow = Flow(fn=lambda: None, name=FLOW_NAME)
    async with get_client() as client:
        lost, ended, recorded, just_ended, young = [
            await client.create_flow_run(flow, name=f"lost-{uuid.uuid4().hex[:6]}") for _ in range(5)]
        for flow_run in (lost, ended, recorded, just_ended):
            await client.set_flow_run_state(flow_run.id, Running(), force=True)
        with catalog.session() as session:
            for flow_run in (ended, recorded, just_ended):
                record_run(session, str(flow_run.id), script_name="lost-test", version_number=None, host="nowhere",
                           trigger="cli", requested_by="tests")
            update_run(session, str(ended.id), ended_at=datetime.now(UTC) - timedelta(seconds=8), exit_code=0)
        await asyncio.sleep(8)
        with catalog.session() as session:
            update_run(session, str(just_ended.id), ended_at=datetime.now(UTC), exit_code=0)
        await client.set_flow_run_state(young.id, Running(), force=True)
        monkeypatch.setenv("SMS_LOST_RUN_SECONDS", "5")
        try:
            notes = await crash_lost_runs(client, catalog, datetime.now(UTC), {str(recorded.id)})
            states = {run.id: (await client.read_flow_run(run.id)).state for run in (lost, ended, recorded, just_ended, young)}
        finally:
            with catalog.session() as session:
                update_run(session, str(recorded.id), ended_at=datetime.now(UTC))
            for run in (recorded, just_ended, young):
                await client.set_flow_run_state(run.id, Cancelled(message="test over"), force=True)
    assert f"{lost.id}: its flow process was lost before it recorded the run (nothing ran on a host)" in notes
    assert any(note.startswith(f"{ended.id}: its flow process was lost after its script ended") for note in notes), notes
    assert not any(str(run.id) in note for note in notes for run in (recorded, just_ended, young))
    assert states[lost.id].type.value == "CRASHED" and "before it recorded the run" in states[lost.id].message
    assert states[ended.id].type.value == "CRASHED" and "the run record has the script's outcome" in states[ended.id].message
    assert [states[run.id].type.value for run in (recorded, just_ended, young)] == ["RUNNING"] * 3
