"""The faces of a fleet run end to end: a small fleet of host blocks on the test bed's sshd (two good
hosts, one whose script fails), a real Prefect server and sms worker. The SDK, the `sms` CLI
(piped progress, exit status, `sms run show`, `sms logs --host`, `sms script add/set --targets`),
the REST API through the real gateway (as an operator, with the gateway client) and a webhook whose
payload picks some of its script's targets: each starts a fleet run and reads back every host's result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sms_plugin import AsyncSMSClient
from sms_plugin import hosts as host_services
from sms_plugin.gateway.signing import sms_signature
from sms_plugin.gateway_client import GatewayClient
from tests.integration.conftest import block_of, until
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
SUFFIX = uuid.uuid4().hex[:6]
OK = [f"ff-ok{n}-{SUFFIX}" for n in (1, 2)]
FAIL = f"ff-fail-{SUFFIX}"
EVERY = f"ff-*-{SUFFIX}"
GOOD = f"ff-ok*-{SUFFIX}"
#: Fails with exit code 3 on the host named ``...-fail-...`` (a fleet run marks each host's run id ``<host>.<id>``).
MIXED = 'case "$SMS_RUN_ID" in *-fail-*) echo "disk full on ${SMS_RUN_ID%%.*}" >&2; exit 3;; esac\necho "ok on ${SMS_RUN_ID%%.*}"\n'


def sms(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The real `sms` command on this session's catalog and Prefect, piped (no terminal)."""
    done = subprocess.run([SMS, "--local", *args], capture_output=True, text=True, timeout=timeout, env=os.environ)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
async def fleet(prefect_server, prefect_worker, ssh_server, tmp_path_factory) -> str:
    """The three hosts and the script ``ff-mixed-*`` (on the first good host); returns the script's name."""
    for name in [*OK, FAIL]:
        await host_services.add(name, block_of(ssh_server, labels=[f"ff-{SUFFIX}"]))
    source = tmp_path_factory.mktemp("fleet") / "mixed.sh"
    source.write_text(MIXED)
    name = f"ff-mixed-{SUFFIX}"
    added = sms("script", "add", name, "-t", "sh", "--host", OK[0], "-f", str(source))
    assert added.returncode == 0, added.stderr
    return name


async def test_cli_and_sdk_start_a_fleet_run_and_read_every_host(fleet):
    piped = sms("run", fleet, "--hosts", f"ff-{SUFFIX}", "--parallel", "3", "--wait")
    assert piped.returncode == 1, piped.stdout + piped.stderr  # one host failed
    first, *lines, last = piped.stdout.splitlines()
    run_id = first.removeprefix("Run ").removesuffix(" started")
    assert sorted(line.split("  ")[:3] for line in lines) == [
        [FAIL, "failed", "exit 3"], [OK[0], "succeeded", "exit 0"], [OK[1], "succeeded", "exit 0"]]
    assert last.startswith(f"FAILED: 2 of 3 host(s) succeeded (1 failed); {fleet} failed on 1 of 3 hosts (1 failed): {FAIL}")

    sdk = AsyncSMSClient(user="tester")
    result = await sdk.result(run_id)
    assert [(h.host, h.state, h.exit_code) for h in result.hosts] == sorted(
        [(OK[0], "succeeded", 0), (OK[1], "succeeded", 0), (FAIL, "failed", 3)])
    failed = next(h for h in result.hosts if h.host == FAIL)
    assert "disk full on " + FAIL in failed.message and failed.seconds is not None and not result.ok

    shown = sms("run", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}: FAILED" in shown.stdout
    for name, state in ((OK[0], "succeeded"), (OK[1], "succeeded"), (FAIL, "failed")):
        [row] = [line for line in shown.stdout.splitlines() if f" {name} " in line and "failed on" not in line]
        assert f" {state} " in row, shown.stdout

    only_fail = await until(lambda: _log_of(run_id, FAIL, "disk full on"), timeout=60)
    assert f"disk full on {FAIL}" in only_fail and "ok on" not in only_fail and "Running" not in only_fail
    only_ok = await until(lambda: _log_of(run_id, OK[1], "ok on"), timeout=60)
    assert f"ok on {OK[1]}" in only_ok and OK[0] not in only_ok and "disk full" not in only_ok

    good = await sdk.run(fleet, hosts=GOOD, policy={"parallel": 1, "batch": "1"}, timeout=180)
    assert (good.state, good.ok, [(h.host, h.state) for h in good.hosts]) == (
        "COMPLETED", True, [(OK[0], "succeeded"), (OK[1], "succeeded")])
    refused = sms("run", fleet, "--hosts", EVERY, "--batch", "half")
    assert refused.returncode == 1 and "batch" in refused.stderr


def _log_of(run_id: str, host: str, wanted: str) -> str:
    done = sms("logs", run_id, "--host", host)
    return done.stdout if done.returncode == 0 and wanted in done.stdout else ""


async def test_a_script_with_targets_through_rest_and_a_webhook(fleet, gateway, tmp_path):  # noqa: F811
    targeted = f"ff-targets-{SUFFIX}"
    source = tmp_path / "mixed.sh"
    source.write_text(MIXED)
    added = sms("script", "add", targeted, "-t", "sh", "--targets", GOOD, "-f", str(source))
    assert added.returncode == 0, added.stderr
    moved = sms("script", "set", targeted, "--targets", EVERY)
    assert moved.returncode == 0 and EVERY in moved.stdout, moved.stderr
    assert sms("script", "set", targeted, "--targets", GOOD).returncode == 0

    otto = GatewayClient(gateway.url, token=gateway.keycloak.token("otto"))  # type: ignore[attr-defined]
    run_id = otto.run(targeted, policy={"parallel": 2})  # no hosts: the script's targets, resolved and judged now
    result = otto.wait(run_id, timeout=180)
    assert (result.state, [(h.host, h.state) for h in result.hosts]) == ("COMPLETED", [(OK[0], "succeeded"), (OK[1], "succeeded")])
    detail = httpx.get(f"{gateway.url}/api/v1/runs/{run_id}", headers=gateway.headers("otto"), timeout=60).json()
    assert detail["host"] == "" and [h["host"] for h in detail["hosts"]] == OK
    assert set(detail["hosts"][0]) == {"host", "state", "exit_code", "seconds", "message"}

    hook = httpx.post(f"{gateway.url}/api/v1/webhooks", json={"script": targeted}, headers=gateway.headers("adam"), timeout=60)
    assert hook.status_code == 201, hook.text
    body = json.dumps({"hosts": OK[1], "policy": {"parallel": 1}}).encode()
    stamp = int(time.time())
    delivered = httpx.post(f"{gateway.url}/hooks/{hook.json()['id']}", content=body, timeout=60, headers={
        "Content-Type": "application/json", "X-SMS-Timestamp": str(stamp),
        "X-SMS-Signature": sms_signature(hook.json()["secret"], stamp, body)})
    assert delivered.status_code == 202, delivered.text
    hooked = otto.wait(delivered.json()["run_id"], timeout=180)
    assert [(h.host, h.state) for h in hooked.hosts] == [(OK[1], "succeeded")]
