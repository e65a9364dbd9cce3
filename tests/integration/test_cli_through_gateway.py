"""`sms` as a new user runs it: a fresh home with no database or Prefect settings, `sms login` to the
real gateway (real Keycloak, real Prefect, a real worker), then every verb through the gateway's
REST API; refusals carry the gateway's reason and change nothing; `sms logout` makes it local again."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from blocks.hosts import LocalHost, load_host
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, access, list_audit
from sms_plugin.deploy import deployment_name
from sms_plugin.errors import NotFound
from tests.cli_imports import HEAVY_FOR_GATEWAY_READS, sms_imports
from tests.integration.conftest import block_of, until
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
SUFFIX = uuid.uuid4().hex[:6]
HELLO, SLOW, NEW = f"door-hello-{SUFFIX}", f"door-slow-{SUFFIX}", f"door-new-{SUFFIX}"
HOST = f"door-local-{SUFFIX}"


class FreshHome:
    """The `sms` command in a home of its own: no SMS_*, no PREFECT_* settings, no terminal."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "NO_COLOR": "1",
                    "COLUMNS": "250", "TERM": "dumb"}

    def __call__(self, *args: str, input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([SMS, *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def login(self, gateway_url: str, user: str) -> None:
        done = self("login", "--gateway", gateway_url, "--password", "-u", user, input=f"{user}-pw\n")
        assert done.returncode == 0, done.stderr
        assert f"as {user}" in done.stdout

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, f"sms {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def refused(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode != 0, done.stdout
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        return done.stderr

    @property
    def login_file(self) -> Path:
        return self.home / ".sms" / "login.json"


@pytest.fixture
def fresh(tmp_path: Path) -> FreshHome:
    return FreshHome(tmp_path)


@pytest.fixture(scope="module")
async def scripts(gateway: Gateway, prefect_worker) -> None:  # noqa: F811
    """Two scripts in the gateway's catalog; the worker serves their pool."""
    # A local host opened to roles and rules (local hosts are admin-only by default).
    await host_services.add(HOST, LocalHost(admins_only=False), overwrite=True)
    for name, content in ((HELLO, 'echo "hello $1"\n'), (SLOW, "echo started\nsleep 300\n")):
        await script_services.add(gateway.catalog, ScriptSpec(name=name, interpreter="sh", host=HOST), content,
                                  author="setup")


def run_id_of(output: str) -> str:
    found = re.search(r"[Rr]un (\S+) started", output)
    assert found, output
    return found.group(1)


async def state_of(run_id: str) -> str:
    async with get_client() as client:
        state = (await client.read_flow_run(UUID(run_id))).state
    return state.type.value if state else ""


async def reaches(run_id: str, wanted: str, timeout: float) -> bool:
    async def there() -> bool:
        return await state_of(run_id) == wanted

    return bool(await until(there, timeout))


async def runs_of(script: str) -> int:
    async with get_client() as client:
        return len(await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name(script).split("/")[1]]))
        ))


async def test_an_operator_lists_runs_stops_and_reads_logs_through_the_gateway(gateway, scripts, fresh):  # noqa: F811
    fresh.login(gateway.url, "otto")
    listing = fresh.ok("script", "list")
    assert HELLO in listing and SLOW in listing
    assert 'echo "hello $1"' in fresh.ok("script", "show", HELLO)

    done = fresh("run", HELLO, "--wait", "--", "world")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "hello world\n"  # the script's output, and only it (docs/cli.md)
    async with get_client() as client:
        tags = set((await client.read_flow_run(UUID(run_id_of(done.stderr)))).tags)
    assert {"sms-trigger:api", "sms-user:otto"} <= tags  # started by the gateway, as otto

    slow = run_id_of(fresh.ok("run", SLOW))
    assert await reaches(slow, "RUNNING", 120), await state_of(slow)
    # Running comes before the script's start: stop it once its first line is out.
    assert await until(lambda: fresh.ok("logs", slow) == "started\n", 60), fresh.ok("logs", slow)
    assert f"Run {slow}: cancelling" in fresh.ok("stop", slow)
    assert slow in fresh.ok("run", "list", "--script", SLOW)  # piped: whole ids, never cut
    assert await reaches(slow, "CANCELLED", 60), await state_of(slow)
    assert fresh.ok("logs", slow) == "started\n"  # through the gateway too: the script's bytes
    assert "already ended" in fresh.refused("stop", slow)

    assert "'admin' needs role sms-admin" in fresh.refused("host", "check", HOST)  # host care is the admins'
    assert not (fresh.home / ".sms" / "catalog.db").exists()  # nothing local was used


async def test_a_viewer_is_refused_with_the_gateways_reason_and_nothing_runs(gateway, scripts, fresh):  # noqa: F811
    fresh.login(gateway.url, "viola")
    assert HELLO in fresh.ok("script", "list")
    before = await runs_of(HELLO)
    error = fresh.refused("run", HELLO, "--wait")
    assert "403" in error and "'start' needs role" in error and "viola has sms-viewer" in error
    assert await runs_of(HELLO) == before
    with gateway.catalog.session() as session:
        [event] = list_audit(session, actor="viola", action="api.run.start", limit=1)
    assert event.outcome == "denied" and event.object_name == HELLO


async def test_an_author_adds_pushes_and_removes_a_script(gateway, scripts, fresh, tmp_path):  # noqa: F811
    fresh.login(gateway.url, "anna")
    source = tmp_path / "new.sh"
    source.write_text("echo one\n")
    fresh.ok("script", "add", NEW, "-t", "sh", "-h", HOST, "-f", str(source), "--tag", "door")
    source.write_text("echo two\n")
    assert f"{NEW}: version 2 stored" in fresh.ok("script", "push", NEW, str(source), "-m", "second")
    versions = fresh.ok("script", "versions", NEW)
    assert "second" in versions and versions.count("anna") == 2
    assert script_services.version(gateway.catalog, NEW).content == "echo two\n"
    assert "picks at each run" in fresh.ok("script", "set", NEW, "--targets", HOST)
    assert (script_services.show(gateway.catalog, NEW).host, script_services.show(gateway.catalog, NEW).targets) == (None, HOST)
    fresh.ok("script", "set", NEW, "--host", HOST)
    assert (script_services.show(gateway.catalog, NEW).host, script_services.show(gateway.catalog, NEW).targets) == (HOST, None)
    assert f"Script {NEW} removed" in fresh.ok("script", "rm", NEW, "--yes")
    with pytest.raises(NotFound):
        script_services.show(gateway.catalog, NEW)


def test_an_expired_login_says_log_in_again(gateway, scripts, fresh):  # noqa: F811
    fresh.login(gateway.url, "otto")
    stored = json.loads(fresh.login_file.read_text())
    fresh.login_file.write_text(json.dumps({**stored, "access_token": "not-a-token"}))
    error = fresh.refused("script", "list")
    assert "401" in error and "run `sms login` again" in error


def test_after_logout_the_cli_is_local_again(gateway, scripts, fresh):  # noqa: F811
    fresh.login(gateway.url, "otto")
    assert HELLO in fresh.ok("script", "list")
    stored = json.loads(fresh.login_file.read_text())
    assert "Logged out" in fresh.ok("logout")
    assert not fresh.login_file.exists()
    # The Keycloak session ended too: a copy of the refresh token no longer works.
    refused = httpx.post(stored["token_endpoint"], data={
        "grant_type": "refresh_token", "client_id": stored["client_id"], "refresh_token": stored["refresh_token"]})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert HELLO not in fresh.ok("script", "list")  # the fresh home's own, empty catalog
    assert f"no script named {HELLO!r}" in fresh.refused("run", HELLO)


async def test_hosts_through_the_gateway_admins_add_others_are_refused(gateway, scripts, fresh):  # noqa: F811
    name = f"door-host-{SUFFIX}"
    fresh.login(gateway.url, "otto")
    error = fresh.refused("host", "add", name, "--local", "--label", "lab")
    assert "403" in error and "'admin' needs role sms-admin" in error
    with pytest.raises(NotFound):
        await load_host(name)
    fresh.login(gateway.url, "adam")
    assert f"Host {name} saved" in fresh.ok("host", "add", name, "--local", "--label", "lab")
    [row] = [line for line in fresh.ok("host", "list").splitlines() if name in line]
    assert "local" in row and "lab" in row


def test_verbs_through_the_gateway_load_neither_prefect_nor_the_catalog(gateway, scripts, fresh):  # noqa: F811
    fresh.login(gateway.url, "otto")
    unknown = str(uuid.uuid4())
    verbs = ((("script", "list"), HELLO), (("script", "show", HELLO), HELLO), (("stop", unknown), None),
             (("host", "list"), "labels"), (("host", "group", "list"), "selector"))  # expected text; None: refused
    for args, shown in verbs:
        done, imported = sms_imports(*args, env=fresh.env)
        assert (done.returncode == 0) is (shown is not None), done.stdout + done.stderr[-2000:]
        assert "httpx" in imported  # it did talk to the gateway
        assert not imported & set(HEAVY_FOR_GATEWAY_READS), (args, sorted(imported & set(HEAVY_FOR_GATEWAY_READS)))
        assert (shown in done.stdout) if shown else ("error: the gateway answered" in done.stderr), done.stderr[-2000:]


async def test_host_trust_and_check_go_through_the_gateways_host_routes(gateway, scripts, fresh, ssh_server):  # noqa: F811
    """`sms host trust` shows the key from `GET /hosts/{name}/host-key` and pins it with
    `POST /hosts/{name}/trust`; `sms host check` is `POST /hosts/{name}/check`: admins only, audited."""
    name = f"door-ssh-{SUFFIX}"
    await host_services.add(name, block_of(ssh_server, host_keys=[]), overwrite=True)
    fresh.login(gateway.url, "otto")
    assert "403" in fresh.refused("host", "trust", name, "--yes")
    assert (await load_host(name)).host_keys == []  # nothing pinned

    fresh.login(gateway.url, "adam")
    assert f"{name} is NOT usable" in fresh("host", "check", name).stdout  # its key is not trusted yet
    trusted = fresh.ok("host", "trust", name, "--yes")
    [pinned] = (await load_host(name)).host_keys
    assert pinned in ssh_server.host_public_keys
    assert pinned.split()[0] in trusted and "SHA256:" in trusted
    assert f"{name} is usable" in fresh.ok("host", "check", name)
    with gateway.catalog.session() as session:
        done = {(e.actor, e.action, e.outcome) for e in list_audit(session, object_name=name, limit=20)}
    assert {("otto", "api.host.key", "denied"), ("adam", "api.host.key", "ok"), ("adam", "api.host.trust", "ok"),
            ("adam", "api.host.check", "ok")} <= done, done
    assert not (fresh.home / ".sms" / "catalog.db").exists()  # the gateway did it, not a local catalog


def test_access_rules_and_webhooks_are_listed_to_admins_only(gateway, scripts, fresh):  # noqa: F811
    """`sms access-rule list` and `sms webhook list` are `GET /access-rules` and `GET /webhooks`."""
    sealed = f"sealed-{secrets.token_hex(8)}"
    with gateway.catalog.session() as session:
        rule_id = access.add_rule(session, created_by="setup", subject_kind="user", subject=f"door-{SUFFIX}",
                                  actions=["read"], script_glob="door-*").id
        hook_id = access.add_webhook(session, id=f"wh_{secrets.token_hex(8)}", created_by="setup", script=HELLO,
                                     secret=sealed).id
    fresh.login(gateway.url, "otto")
    for args in (("access-rule", "list"), ("webhook", "list")):
        error = fresh.refused(*args, "-o", "json")
        assert "403" in error and "'admin' needs role sms-admin" in error
    fresh.login(gateway.url, "adam")
    [rule] = [r for r in json.loads(fresh.ok("access-rule", "list", "-o", "json")) if r["id"] == rule_id]
    assert (rule["subject"], rule["actions"], rule["script_glob"]) == (f"door-{SUFFIX}", ["read"], "door-*")
    listed = fresh.ok("webhook", "list", "--script", HELLO, "-o", "json")
    assert [(h["id"], h["path"], h["script"]) for h in json.loads(listed)] == [(hook_id, f"/hooks/{hook_id}", HELLO)]
    assert sealed not in listed and "secret" not in listed
    with gateway.catalog.session() as session:
        refused = {(e.action, e.outcome) for e in list_audit(session, actor="otto", limit=20)}
    assert {("api.rule.list", "denied"), ("api.webhook.list", "denied")} <= refused, refused
    assert not (fresh.home / ".sms" / "catalog.db").exists()  # the gateway answered, not a local catalog
