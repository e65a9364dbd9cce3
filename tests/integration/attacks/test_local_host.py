"""Host ``local`` is privileged. Through the real gateway (real Keycloak tokens), an operator or an
author cannot start a script on an admin-only local host, move a run there, or add a script
there: 403 with the reason, nothing created, no run. A local script runs as the unprivileged
account ``sms-run`` (real sms worker, real Prefect server): not root, no Prefect or catalog
variables in its environment, and the worker's environment and catalog are unreadable to it."""

from __future__ import annotations

import os
import pwd
import uuid

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from blocks.hosts import LocalHost
from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, list_audit, list_runs
from sms_plugin.deploy import deployment_name
from sms_plugin.errors import NotFound, TransportError
from sms_plugin.settings import sms_home
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
LOCAL, OPEN = f"lh-local-{SUFFIX}", f"lh-open-{SUFFIX}"
ON_LOCAL, ON_OPEN = f"lh-tidy-{SUFFIX}", f"lh-report-{SUFFIX}"
IDLE_POOL = "sms-gateway-idle"  # no worker serves it: an admitted run stays Scheduled


@pytest.fixture(scope="module")
async def hosts(gateway: Gateway) -> None:  # noqa: F811
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        await host_services.add(LOCAL, LocalHost())  # admins_only by default
        await host_services.add(OPEN, LocalHost(admins_only=False))
        for name, host in ((ON_LOCAL, LOCAL), (ON_OPEN, OPEN)):
            await script_services.add(gateway.catalog, ScriptSpec(name=name, interpreter="sh", host=host), "echo hi\n", author="setup")


async def _flow_runs_of(script: str) -> int:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(script))
        return len(await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))))


def _runs_of(gateway: Gateway, script: str) -> int:  # noqa: F811
    with gateway.catalog.session() as session:
        return len(list_runs(session, script_name=script, limit=100))


async def test_operators_and_authors_cannot_target_an_admin_only_host(gateway, hosts):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        starts = [
            ("otto", ON_LOCAL, {}),
            ("paula", ON_LOCAL, {}),
            ("otto", ON_OPEN, {"host": LOCAL}),  # a run moved onto the local host
        ]
        for user, script, body in starts:
            before = await _flow_runs_of(script), _runs_of(gateway, script)
            reply = await client.post(f"/api/v1/scripts/{script}/runs", json=body, headers=gateway.headers(user))
            assert reply.status_code == 403, reply.text
            assert f"{user} may not start on host {LOCAL}" in reply.json()["detail"]
            assert (await _flow_runs_of(script), _runs_of(gateway, script)) == before, "a refused start made a run"

        for user in ("anna", "otto"):
            name = f"lh-new-{user}-{SUFFIX}"
            body = {"name": name, "interpreter": "sh", "host": LOCAL, "content": "id\n"}
            reply = await client.post("/api/v1/scripts", json=body, headers=gateway.headers(user))
            assert reply.status_code == 403, reply.text
            with pytest.raises(NotFound):
                script_services.show(gateway.catalog, name)
            async with get_client() as prefect:
                assert not [d for d in await prefect.read_deployments() if d.name == name]
            reply = await client.post(f"/api/v1/scripts/{ON_LOCAL}/versions", json={"content": "id\n"},
                                      headers=gateway.headers("anna"))
            assert reply.status_code == 403 and "worker's own machine" in reply.text
            assert script_services.version(gateway.catalog, ON_LOCAL).content == "echo hi\n"

        with gateway.catalog.session() as session:
            denied = [e for e in list_audit(session, outcome="denied", limit=50) if LOCAL in e.detail.get("reason", "")]
        assert {e.actor for e in denied} >= {"otto", "paula", "anna"}

        # The same requests pass for an admin, and for operators on a local host opened to them.
        assert (await client.post(f"/api/v1/scripts/{ON_LOCAL}/runs", json={}, headers=gateway.headers("adam"))).status_code == 201
        assert (await client.post(f"/api/v1/scripts/{ON_OPEN}/runs", json={}, headers=gateway.headers("otto"))).status_code == 201


PROBE = """\
echo "uid=$(id -u) gid=$(id -g)"
echo "names=$(env | cut -d= -f1 | tr '\\n' ' ')"
echo "cwd=$(pwd)"
for file in "/proc/$PPID/environ" "/proc/$1/environ" "$2"; do
  if cat "$file" >/dev/null 2>&1; then echo "readable=$file"; else echo "denied=$file"; fi
done
"""


async def test_a_local_script_runs_unprivileged_and_cannot_read_the_worker(catalog, prefect_worker, run_account):
    host, name = f"lh-run-{SUFFIX}", f"lh-probe-{SUFFIX}"
    await host_services.add(host, LocalHost())
    await script_services.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host), PROBE, author="tests")
    secrets_file = sms_home() / "catalog.db"
    assert secrets_file.exists()
    run_id = await run_services.start(catalog, name, args=[str(prefect_worker.pid), str(secrets_file)], trigger="test", user="tests")
    result = await run_services.wait(catalog, run_id, timeout=120)
    assert result.state == "COMPLETED", result
    output = [line.removeprefix("stdout: ") for message in result.output_tail for line in message.splitlines()]
    lines = dict(line.split("=", 1) for line in output if line.split("=", 1)[0] in {"uid", "names", "cwd"})
    assert lines.keys() == {"uid", "names", "cwd"}, result.output_tail
    account = pwd.getpwnam(run_account)
    assert lines["uid"] == f"{account.pw_uid} gid={account.pw_gid}" and account.pw_uid != 0
    names = set(lines["names"].split())
    assert not {n for n in names if n.startswith("PREFECT_") or (n.startswith("SMS_") and n != "SMS_RUN_ID")}, names
    assert {"HOME", "PATH", "USER"} <= names
    assert lines["cwd"] == f"{account.pw_dir}/.sms/run"
    readable = [line for line in output if line.startswith("readable=")]
    assert not readable, readable
    assert len([line for line in output if line.startswith("denied=")]) == 3
    assert os.stat(lines["cwd"]).st_mode & 0o077 == 0, "the working folder is not private"


async def test_root_is_refused_unless_allowed(prefect_server):
    with pytest.raises(TransportError, match="refusing to run local scripts as 'root'"):
        await LocalHost(run_as="root").open_transport()
    with pytest.raises(TransportError, match="no such account"):
        await LocalHost(run_as="sms-nobody-here").open_transport()
    async with await LocalHost(run_as="root", allow_root=True).open_transport():
        pass
