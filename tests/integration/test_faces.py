"""The faces over the services, end to end against a real Prefect server, worker and sshd:
the SDK, the `sms` CLI, declarative `sms apply`, and the embedded stack `sms up`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import get_client

from sms_plugin import AsyncSMSClient
from sms_plugin.deploy import deployment_name
from tests.integration.conftest import wait_for_metric
from tests.integration.test_events_kafka import first_copies, read_events
from tests.integration.test_worker_shutdown import marked_processes

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def sdk(prefect_server) -> AsyncSMSClient:
    client = AsyncSMSClient(user="tester")
    await client.add_host("local", "local", overwrite=True)
    return client


def sms(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs the real `sms` command with this session's Prefect API and catalog."""
    return subprocess.run([SMS, *args], capture_output=True, text=True, input=input, timeout=timeout, env=os.environ)


async def test_sdk_script_becomes_a_scheduled_deployment(sdk):
    name = unique("sdk-sched")
    await sdk.add_script(
        name, interpreter="sh", host="local", content="echo scheduled\n",
        schedules=[{"interval_seconds": 3600, "timezone": "Europe/Berlin"}], tags=["nightly"],
    )
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(name))
    assert deployment.work_pool_name == "sms"
    assert deployment.entrypoint == "flows.run_script.run_script"
    assert deployment.parameters == {"script": name}
    assert {"nightly", "host:local"} <= set(deployment.tags)
    [schedule] = deployment.schedules
    assert schedule.schedule.interval.total_seconds() == 3600
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.active


async def test_a_deployment_version_is_the_flows_not_the_callers_git_commit(sdk, tmp_path, monkeypatch):
    """Run from inside a git checkout, Prefect would ask git for a commit to call the version."""
    from flows.run_script import run_script

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["remote", "add", "origin", "https://example.invalid/ops.git"],
                 ["commit", "-q", "--allow-empty", "-m", "ops"]):
        subprocess.run([*git, *argv], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    name = unique("sdk-version")
    await sdk.add_script(name, interpreter="sh", host="local", content="echo v\n")
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(name))
    assert deployment.version == run_script.version  # git's would be the commit, e.g. "1a2b3c4d"


async def test_sdk_run_waits_for_the_result(sdk, prefect_worker):
    name = unique("sdk-run")
    await sdk.add_script(name, interpreter="bash", host="local", content='echo "got $1"; echo warn >&2; exit 5\n')
    result = await sdk.run(name, ["it's $(x)"], timeout=120)
    assert (result.state, result.exit_code) == ("FAILED", 5)
    assert sorted(result.output_tail) == ["stderr: warn", "stdout: got it's $(x)"]
    assert "exit code 5" in result.message
    lines = [line async for line in sdk.logs(result.run_id)]
    assert any(line.message == "got it's $(x)" and line.level == "INFO" for line in lines), lines


async def test_cli_run_wait_returns_the_scripts_exit_code(sdk, prefect_worker):
    name = unique("cli-exit")
    await sdk.add_script(name, interpreter="sh", host="local", content='echo "code $1"; exit "$1"\n')
    done = await asyncio.to_thread(sms, "run", name, "--wait", "--", "42")
    assert done.returncode == 42, done.stderr
    assert done.stdout == "code 42\n" and "exit code 42" in done.stderr
    done = await asyncio.to_thread(sms, "run", name, "--wait", "--", "0")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-script"], "error: no script named 'no-such-script'"),
        (["stop", "not-a-uuid"], "error: no run with id 'not-a-uuid'"),
        (["host", "trust", "no-such-host"], "error: no host named 'no-such-host'"),
        (["script", "add", "Bad Name", "-t", "bash", "-h", "local"], "name"),
        (["script", "add", "x-interp", "-t", "cobol", "-h", "local", "-f", "/etc/hostname"], "unknown interpreter 'cobol'"),
        (["apply", "/no/such/folder"], "error:"),
    ],
)
async def test_cli_errors_are_one_clear_line(prefect_server, args, message):
    done = await asyncio.to_thread(sms, *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


async def test_cli_error_when_prefect_is_unreachable(tmp_path):
    from infra.testbed.ports import free_port

    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    done = subprocess.run([SMS, "host", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the Prefect API" in done.stderr and "Traceback" not in done.stderr


async def test_cli_host_add_trust_and_run_over_ssh(sdk, ssh_server, prefect_server, tmp_path):
    host, name = unique("h"), unique("cli-ssh")
    key_file = tmp_path / "id"
    key_file.write_text(ssh_server.private_key_pem)
    added = sms("host", "add", host, "--ssh", ssh_server.host, "--port", str(ssh_server.port),
                "--user", ssh_server.username, "--key-file", str(key_file))
    assert added.returncode == 0, added.stderr
    await sdk.add_script(name, interpreter="ksh", host=host, content="print -r -- \"$(id -un) ${.sh.version}\"\n")
    from flows.run_script import run_script

    refused = await run_script(script=name, return_state=True)
    assert refused.is_failed() and "not trusted" in refused.message
    trusted = sms("host", "trust", host, "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert "SHA256:" in trusted.stdout
    listed = sms("host", "list")
    assert host in listed.stdout
    state = await run_script(script=name, return_state=True)
    assert state.is_completed(), state.message
    result = await sdk.result(str(state.state_details.flow_run_id))
    assert result.output_tail[0].startswith(f"stdout: {ssh_server.username} Version")


async def test_apply_plans_applies_and_is_idempotent(sdk, tmp_path):
    host, name = unique("ah"), unique("applied")
    (tmp_path / "s.sh").write_text("echo one\n")
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(
        f"hosts:\n  - name: {host}\n    type: local\n"
        f"scripts:\n  - name: {name}\n    interpreter: sh\n    host: {host}\n    file: s.sh\n"
        f"    schedules: [{{cron: '15 2 * * *', timezone: Europe/Paris}}]\n"
    )
    first = await sdk.plan(catalog_file)
    assert [(c.kind, c.name, c.action) for c in first.changes] == [("host", host, "add"), ("script", name, "add")]
    await sdk.apply(catalog_file)
    again = await sdk.plan(catalog_file)
    assert [c.action for c in again.changes] == ["unchanged", "unchanged"]

    (tmp_path / "s.sh").write_text("echo two\n")
    catalog_file.write_text(catalog_file.read_text().replace("15 2", "30 3"))
    dry = sms("apply", str(catalog_file), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"update    script {name} (schedules, new version (after 1))" in dry.stdout
    assert [v.number for v in await sdk.versions(name)] == [1]  # a dry run changes nothing
    applied = sms("apply", str(catalog_file), "--yes")
    assert applied.returncode == 0, applied.stderr
    assert [v.number for v in await sdk.versions(name)] == [2, 1]
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(name))
    assert [s.schedule.cron for s in deployment.schedules] == ["30 3 * * *"]
    assert "Nothing to change." in sms("apply", str(catalog_file), "--yes").stdout


async def test_apply_rejects_a_bad_file_with_its_name(sdk, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scripts:\n  - name: x\n    interpreter: sh\n    host: local\n    colour: red\n")
    done = sms("apply", str(bad), "--yes")
    assert done.returncode == 1
    assert str(bad) in done.stderr and "colour" in done.stderr


def test_sms_up_runs_the_samples_and_stops_cleanly(kafka, tmp_path):
    """The README's main job: `sms up` on embedded defaults, a sample run, Ctrl-C; a run still in
    flight at Ctrl-C ends Cancelled with its processes gone. With SMS_KAFKA_BOOTSTRAP (the session's
    cluster) it also starts the event publisher: a script added through the CLI arrives as its
    CloudEvent on sms.catalog (without Kafka, no publisher: test_sms_up_puts_prefect_behind_the_gateway)."""
    from infra.testbed.ports import free_port

    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMS_"))}
    env.update(SMS_HOME=str(tmp_path / "home"), PREFECT_WORKER_QUERY_SECONDS="1", SMS_EXPORTER_PORT=str(metrics_port),
               SMS_KAFKA_BOOTSTRAP=kafka.bootstrap, SMS_EVENTS_METRICS_PORT=str(free_port()))
    up = subprocess.Popen([SMS, "up", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert up.stdout is not None
        seen = ""
        deadline = time.monotonic() + 150
        while "SMS is up" not in seen and time.monotonic() < deadline and up.poll() is None:
            seen += up.stdout.readline()
        assert "SMS is up" in seen, seen
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        # Wide enough that rich does not wrap the longer (Windows) sample names.
        listed = subprocess.run([SMS, "script", "list"], env={**env, "COLUMNS": "200"}, capture_output=True,
                                text=True, timeout=60)
        for sample in ("hello-bash", "disk-report-sh", "inventory-ksh", "health-python",
                       "cleanup-temp-powershell", "service-check-bat"):
            assert sample in listed.stdout
        done = subprocess.run([SMS, "run", "hello-bash", "--wait", "--", "SMS"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "hello, SMS" in done.stdout
        processes = subprocess.run(["pgrep", "-a", "-P", str(up.pid)], capture_output=True, text=True).stdout.splitlines()
        children = [line.split(" ", 1)[0] for line in processes]
        # The Prefect server, the worker, the exporter and the publisher, each in a session of its own.
        assert len(children) == 4 and any(line.endswith("sms events") for line in processes), processes
        wait_for_metric(metrics_port, 'sms_script_runs_total{host="local",script="hello-bash",state="completed"} 1.0', 30)
        sleeper = tmp_path / "sleeper.sh"
        sleeper.write_text("sleep 300 &\necho started\nsleep 300\n")
        name = f"sleeper-{uuid.uuid4().hex[:8]}"  # the key of its events on the session's Kafka
        added = subprocess.run([SMS, "script", "add", name, "-t", "sh", "--host", "local", "--file", str(sleeper)],
                               env=env, capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stdout + added.stderr
        found = read_events(kafka.bootstrap, name, lambda events: any(
            e["type"] == "sms.script.added" and e["source"] == "/sms/catalog" for e in events))
        [event] = [e for e in first_copies(found["sms.catalog"]) if e["type"] == "sms.script.added"]
        assert event["data"] == {"script": name, "interpreter": "sh", "host": "local", "tags": [], "enabled": True}
        started = subprocess.run([SMS, "run", name], env=env, capture_output=True, text=True, timeout=120)
        [in_flight] = re.findall(r"Run (\S+) started", started.stdout)
        deadline = time.monotonic() + 90
        while len(marked_processes(in_flight)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(marked_processes(in_flight)) >= 2, "the sleeper did not start"
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(120) == 0
    sessions = [str(up.pid), *children]
    left = subprocess.run(["pgrep", "-s", ",".join(sessions)], capture_output=True, text=True).stdout.split()
    assert left == []
    assert marked_processes(in_flight) == []  # the script and its background child
    with sqlite3.connect(tmp_path / "home" / "prefect" / "prefect.db") as prefect_db:  # the stopped server's store
        [(state,)] = prefect_db.execute("SELECT state_type FROM flow_run WHERE id = ?", (in_flight,)).fetchall()
    assert state == "CANCELLED"


async def test_host_block_types_are_in_the_prefect_block_catalog(prefect_server):
    async with get_client() as client:
        ssh = await client.read_block_type_by_slug("sms-ssh-host")
        local = await client.read_block_type_by_slug("sms-local-host")
    assert ssh.name == "SMS SSH Host" and "host key" in ssh.description
    assert local.name == "SMS Local Host"
