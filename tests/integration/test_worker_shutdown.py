"""Stopping ``sms worker`` with runs in flight: SIGINT and SIGTERM cancel its runs,
their process groups are killed on their hosts (the test bed's sshd and a local host) and the runs
end Cancelled before the worker exits. Real Prefect server, real sshd, the worker as a subprocess.
(``sms up`` stops its worker with SIGTERM.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from blocks.hosts import LocalHost
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import ScriptSpec
from tests.integration.conftest import block_of, until

pytestmark = pytest.mark.integration

STOP_SECONDS = {"sms": 40, "sms-process": 60}
"""The worker's bound (SMS_WORKER_STOP_SECONDS); the test allows a little more for the exit.
(``sms-process``: each run's process gets the cancel and kills its process group; the worker ends
the run Cancelled once that process has exited, docs/worker.md#crash-semantics.)"""


START_SECONDS = {"sms": 120, "sms-process": 300}
"""How long the scripts may take to start: an sms-process run first starts a Python process that
imports Prefect (minutes on a loaded 2-core machine)."""


def marked_processes(run_id: str) -> list[int]:
    """Processes of this machine carrying the run's marker (the test bed's sshd is local too)."""
    needle = f"SMS_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


async def _run_state(run_id: str) -> str | None:
    async with get_client() as client:
        state = (await client.read_flow_run(UUID(run_id))).state
    return state.type.value if state else None


async def _log_messages(run_id: str) -> list[str]:
    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])))
    return [log.message for log in logs]


async def _pool(worker_type: str) -> str:
    name = f"sms-stop-{uuid.uuid4().hex[:6]}"
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=name, type=worker_type))
    return name


def _start_worker(prefect_server, pool: str, worker_type: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "SMS_WORKER_STOP_SECONDS": str(STOP_SECONDS[worker_type]),
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the child keeps it
    sms = str(Path(sys.executable).with_name("sms"))
    return subprocess.Popen([sms, "worker", "--pool", pool, "--type", worker_type], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(
    ("worker_type", "signum"),
    [("sms", signal.SIGINT), ("sms", signal.SIGTERM), ("sms-process", signal.SIGTERM)],
    ids=["sms-SIGINT", "sms-SIGTERM", "sms-process-SIGTERM"],
)
async def test_stopping_the_worker_cancels_its_runs_and_kills_them_on_their_hosts(
    catalog, ssh_server, worker_type, signum, tmp_path, prefect_server, monkeypatch
):
    pool = await _pool(worker_type)
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    tag = uuid.uuid4().hex[:6]
    ssh_host, local_host = f"stop-ssh-{tag}", f"stop-local-{tag}"
    await hosts.add(ssh_host, block_of(ssh_server))
    await hosts.add(local_host, LocalHost(admins_only=False))
    ids = []
    for host in (ssh_host, local_host):
        name = f"sleeper-{host}"
        await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host),
                          "sleep 300 &\necho started\nsleep 300\n", author="tests")
        ids.append(await runs.start(catalog, name, trigger="cli", user="tests"))

    worker = _start_worker(prefect_server, pool, worker_type, tmp_path)
    try:
        assert await until(lambda: all(len(marked_processes(i)) >= 2 for i in ids), START_SECONDS[worker_type]), (
            "the scripts did not start", (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
        assert [await _run_state(i) for i in ids] == ["RUNNING", "RUNNING"]

        worker.send_signal(signum)
        stop_signalled = asyncio.get_running_loop().time()
        exit_code = await asyncio.to_thread(worker.wait, STOP_SECONDS[worker_type] + 20)
        print(f"{worker_type} worker stopped by {signum.name} with its runs Cancelled in "
              f"{asyncio.get_running_loop().time() - stop_signalled:.1f} s")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert exit_code == 0, (exit_code, log[-3000:])
    for run_id in ids:
        assert marked_processes(run_id) == [], (run_id, log[-3000:])
        assert await _run_state(run_id) == "CANCELLED", (run_id, log[-3000:])
        messages = await _log_messages(run_id)
        assert any("the worker is stopping" in m for m in messages), messages
        assert any(m.startswith("stopped: process group") for m in messages), messages
