"""No command from a caller: a flow run whose job variables would change what a worker executes
(``command``, ``env``, ``working_dir``) is refused by SMS's workers — ``sms`` (in-process) and
``sms-process`` (a process per run) — and ends Crashed at once with the reason; the command never
runs. A run without job variables still completes. Real Prefect server, real workers, real sshd."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from prefect import get_client

from infra.testbed.prefect_worker import PrefectWorker
from sms_plugin import hosts, scripts
from sms_plugin.catalog import ScriptSpec
from sms_plugin.deploy import deployment_name
from tests.integration.conftest import block_of, until

pytestmark = pytest.mark.integration

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _attacks(marker: Path) -> list[dict[str, object]]:
    touch = f"sh -c 'touch {marker}'"
    return [
        {"command": touch},
        {"env": {"BASH_ENV": str(marker), "PYTHONSTARTUP": str(marker)}},
        {"command": touch, "env": {"X": "1"}, "working_dir": "/", "stream_output": False},
        {"working_dir": "/tmp"},
    ]


async def _final_state(flow_run_id: uuid.UUID):
    async def ended():
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
        return flow_run.state if flow_run.state and flow_run.state.type.value in FINAL else None

    return await until(ended, 60, interval=0.5)


@pytest.mark.parametrize("worker_type", ["sms", "sms-process"])
async def test_job_variables_are_refused_by_the_worker(worker_type, catalog, ssh_server, prefect_server, tmp_path, monkeypatch):
    pool = f"guarded-{worker_type}-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    monkeypatch.setenv("SMS_WORKER_TYPE", worker_type)
    env = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    host, name = f"jv-{uuid.uuid4().hex[:6]}", f"jv-{worker_type}-{uuid.uuid4().hex[:6]}"
    await hosts.add(host, block_of(ssh_server))
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host), "echo fine\n", author="tests")

    async with get_client() as client:
        work_pool = await client.read_work_pool(pool)
        assert work_pool.type == worker_type
        assert work_pool.base_job_template["variables"].get("properties") == {}
        assert "command" not in str(work_pool.base_job_template)
        deployment = await client.read_deployment_by_name(deployment_name(name))
        markers = [tmp_path / f"marker-{i}" for i in range(4)]
        attacks = [
            await client.create_flow_run_from_deployment(deployment.id, job_variables=variables)
            for marker, variables in zip(markers, [_attacks(m)[i] for i, m in enumerate(markers)])
        ]
        legit = await client.create_flow_run_from_deployment(deployment.id)

    with PrefectWorker(prefect_server.api_url, pool=pool, worker_type=worker_type, extra_env=env):
        states = [await _final_state(run.id) for run in attacks]
        legit_state = await _final_state(legit.id)

    for run, state in zip(attacks, states):
        assert state is not None, f"run {run.id} with job variables {run.job_variables} did not end"
        assert state.type.value == "CRASHED", (run.job_variables, state)
        assert "job variables refused" in (state.message or ""), state.message
        for key in run.job_variables:
            assert key in state.message
    assert not [m for m in markers if m.exists()], "a command from job variables ran"
    assert legit_state is not None and legit_state.type.value == "COMPLETED", legit_state
