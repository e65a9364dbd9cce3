"""A worker on a Prefect that lacks a private object SMS patches refuses to start: it exits with a
message naming the object and Prefect's version, and picks up no run. The worker runs as a
subprocess whose ``sitecustomize`` deletes the object from the installed Prefect."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import prefect
import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from blocks.hosts import LocalHost
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import ScriptSpec

pytestmark = pytest.mark.integration

REMOVE_A_PATCHED_OBJECT = "import prefect.flow_engine\ndel prefect.flow_engine._termination_intent\n"


@pytest.mark.parametrize("worker_type", ["sms", "sms-process"])
async def test_a_worker_refuses_a_prefect_without_a_patched_object(catalog, prefect_server, worker_type, tmp_path, monkeypatch):
    pool = f"sms-refuse-{uuid.uuid4().hex[:6]}"
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type=worker_type))
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    host, name = f"refuse-{pool}", f"refused-{pool}"
    await hosts.add(host, LocalHost(admins_only=False))
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host), "echo never\n", author="tests")
    run_id = await runs.start(catalog, name, trigger="cli", user="tests")
    (tmp_path / "sitecustomize.py").write_text(REMOVE_A_PATCHED_OBJECT)

    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PREFECT_API_URL": prefect_server.api_url,
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    sms = str(Path(sys.executable).with_name("sms"))
    worker = subprocess.run([sms, "worker", "--pool", pool, "--type", worker_type], env=env, capture_output=True,
                            text=True, timeout=180)

    assert worker.returncode == 1, (worker.stdout, worker.stderr)
    said = " ".join(worker.stderr.split())  # the console wraps long lines
    assert f"error: SMS cannot run on Prefect {prefect.__version__}: prefect.flow_engine._termination_intent is missing" in said, said
    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(run_id))
        workers = await client.read_workers_for_work_pool(pool)
    assert flow_run.state is not None and flow_run.state.type.value == "SCHEDULED"
    assert workers == []  # it never registered with the pool either
