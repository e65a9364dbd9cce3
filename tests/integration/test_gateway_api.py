"""The SMS REST API behind the real gateway app: an authorization matrix over every SMS route ×
each realm user (real Keycloak tokens) and one narrowed access rule, against a real Prefect server.

paula is an sms-operator in group team-payments, and the rule says team-payments may start and
stop only scripts tagged ``payments`` on hosts labelled ``prod-eu``. Every request must get exactly
the expected status, write exactly one audit event (actor, client address, outcome), and a
denial's 403 body must carry the policy's reason. A route of the app missing from the matrix fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from prefect import get_client
from sqlalchemy import MetaData, select

from blocks.hosts import LocalHost, SSHHost
from sms_plugin import host_groups
from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, list_audit
from sms_plugin.catalog import access as rows
from sms_plugin.gateway.signing import seal
from tests.integration.gateway_fixtures import USERS, Gateway, gateway  # noqa: F401 - fixture
from tests.integration.loop_guard import catalog_off_loops  # noqa: F401 - fixture
from tests.conftest import run_suffix

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("catalog_off_loops")]

SUFFIX = run_suffix()
EU, US = f"gw-eu-{SUFFIX}", f"gw-us-{SUFFIX}"
PAY_EU, PAY_US, OPS_EU = f"gw-pay-eu-{SUFFIX}", f"gw-pay-us-{SUFFIX}", f"gw-ops-eu-{SUFFIX}"
QUIET = f"gw-quiet-{SUFFIX}"
"""A paused script (its deployment schedules no run while the matrix compares Prefect's state)."""
SSH = f"gw-ssh-{SUFFIX}"
"""The test bed's sshd, no key pinned; ``SSH_KEY`` holds the fingerprint it shows."""
SSH_KEY: dict[str, str] = {}
IDLE_POOL = "sms-gateway-idle"

#: Routes other parts of the gateway own and test (login, health, docs, the Prefect proxy).
NOT_SMS_API = {
    ("GET", "/api/v1/openapi.json"), ("HEAD", "/api/v1/openapi.json"), ("GET", "/api/v1/docs"),
    ("HEAD", "/api/v1/docs"), ("GET", "/docs/oauth2-redirect"), ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"),
    ("GET", "/auth/login"), ("GET", "/auth/callback"), ("GET", "/auth/logout"), ("POST", "/auth/logout"),
    ("GET", "/auth/config"), ("GET", "/auth/me"), ("GET", "/auth/register"),
    ("GET", "/prefect"), ("HEAD", "/prefect"),
    # the console's static files and its client routes (no data, no login): tests/unit/test_console_static.py
    ("GET", "/{path:path}"),
    # the monitoring API: tested with Prometheus and Elasticsearch in test_monitor_api.py
    ("GET", "/api/v1/monitor/overview"), ("GET", "/api/v1/logs/search"), ("GET", "/api/v1/runs/{run_id}/output/stream"),
    *(
        (method, "/prefect/{path:path}")
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "WEBSOCKET")
    ),
}


@dataclass
class World:
    """What the matrix acts on; ``make_*`` create a fresh object for one request."""

    gateway: Gateway

    async def make_run(self, script: str) -> str:
        return await run_services.start(self.gateway.catalog, script, trigger="test", user="setup")

    async def make_script(self) -> str:
        name = f"gw-rm-{uuid.uuid4().hex[:8]}"
        await script_services.add(self.gateway.catalog, ScriptSpec(name=name, interpreter="sh", host=EU), "echo x\n",
                                  author="setup")
        return name

    def make_rule(self) -> int:
        with self.gateway.catalog.session() as s:
            return rows.add_rule(s, created_by="setup", subject_kind="user", subject="nobody", actions=["read"]).id

    def make_group(self) -> str:
        name = f"gw-group-{uuid.uuid4().hex[:8]}"
        with self.gateway.catalog.session() as s:
            host_groups.add(s, name, f"{EU} OR {US}", author="setup")
        return name

    def make_hook(self) -> str:
        hook_id = f"wh_{uuid.uuid4().hex[:16]}"
        with self.gateway.catalog.session() as s:
            rows.add_webhook(s, id=hook_id, created_by="setup", script=PAY_EU, secret=seal("s3cret"), arguments=[])
        return hook_id


@pytest.fixture(scope="module")
async def world(gateway: Gateway, ssh_server) -> World:  # noqa: F811
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)  # no worker serves it: runs stay Scheduled
        # Local hosts opened to roles and rules (admins_only off), like any other host.
        await host_services.add(EU, LocalHost(labels=["prod-eu"], admins_only=False))
        await host_services.add(US, LocalHost(labels=["prod-us"], admins_only=False))
        for name, host, tags in ((PAY_EU, EU, ["payments"]), (PAY_US, US, ["payments"]), (OPS_EU, EU, ["ops"])):
            spec = ScriptSpec(name=name, interpreter="sh", host=host, tags=tags)
            await script_services.add(gateway.catalog, spec, "echo one\n", author="setup")
        await script_services.update(
            gateway.catalog, ScriptSpec(name=PAY_EU, interpreter="sh", host=EU, tags=["payments"]), "echo two\n",
            author="setup",
        )
        await script_services.add(gateway.catalog, ScriptSpec(name=QUIET, interpreter="sh", host=EU, tags=["ops"],
                                                              enabled=False), "echo quiet\n", author="setup")
        await host_services.add(SSH, SSHHost(address=ssh_server.host, port=ssh_server.port, username=ssh_server.username,
                                             private_key=ssh_server.private_key_pem, connect_timeout=5))
        SSH_KEY["fingerprint"] = (await host_services.scan_host_key(SSH)).fingerprint
        with gateway.catalog.session() as s:
            rows.add_rule(
                s, created_by="setup", subject_kind="group", subject="team-payments", actions=["start", "stop"],
                script_tag="payments", host_label="prod-eu",
            )
        yield World(gateway)


Params = Callable[[World], Awaitable[dict[str, Any]]]


async def no_params(_: World) -> dict[str, Any]:
    return {}


def run_of(script: str) -> Params:
    async def params(world: World) -> dict[str, Any]:
        return {"run_id": await world.make_run(script)}

    return params


async def a_script(world: World) -> dict[str, Any]:
    return {"name": await world.make_script()}


async def a_rule(world: World) -> dict[str, Any]:
    return {"rule_id": world.make_rule()}


async def a_group(world: World) -> dict[str, Any]:
    return {"name": world.make_group()}


async def a_hook(world: World) -> dict[str, Any]:
    return {"hook_id": world.make_hook()}


def fixed(**values: Any) -> Params:
    async def params(_: World) -> dict[str, Any]:
        return values

    return params


def everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(USERS, status)


ADMIN = {"adam"}
AUTHORS = {"anna", "adam"}
OPERATORS = {"otto", "adam", "paula"}
UNNARROWED_OPERATORS = {"otto", "adam"}


@dataclass
class Case:
    method: str
    route: str
    allowed: dict[str, int]
    """Users allowed and the status they get; every other user gets 403."""
    params: Params = no_params
    body: Callable[[str], Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}{' ' + self.label if self.label else ''}"

    @property
    def quiet_read(self) -> bool:
        """A read of the catalog: audited only when refused (reads of output, logs, the audit trail
        and a host's key always are)."""
        return (self.method == "GET" and self.route not in AUDITED_READS) or self.route == "/api/v1/selections/judge"


AUDITED_READS = {
    "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/logs", "/api/v1/audit-events", "/api/v1/hosts/{name}/host-key",
}


def only(users: set[str], status: int) -> dict[str, int]:
    return dict.fromkeys(users, status)


def unique(prefix: str, user: str) -> str:
    return f"{prefix}-{user}-{uuid.uuid4().hex[:6]}"


CASES = [
    Case("GET", "/api/v1/hosts", everyone(200)),
    Case("GET", "/api/v1/hosts", everyone(200), query={"select": f"{EU},{US}"}, label="with a selector"),
    Case("GET", "/api/v1/hosts/{name}", everyone(200), fixed(name=EU)),
    Case("GET", "/api/v1/host-groups", everyone(200)),
    Case("GET", "/api/v1/host-groups/{name}", everyone(200), a_group),
    Case("POST", "/api/v1/host-groups", only(ADMIN, 201), body=lambda u: {"name": unique("gw-g", u), "selector": EU}),
    Case("PUT", "/api/v1/host-groups/{name}", only(ADMIN, 200), a_group, body=lambda u: {"selector": US}),
    Case("DELETE", "/api/v1/host-groups/{name}", only(ADMIN, 204), a_group),
    Case("POST", "/api/v1/selections/judge", only(OPERATORS, 200),
         body=lambda u: {"selector": EU, "script": PAY_EU}, label="payments on prod-eu"),
    Case("POST", "/api/v1/selections/judge", only(UNNARROWED_OPERATORS, 200),
         body=lambda u: {"selector": f"{EU},{US}", "script": PAY_EU}, label="payments on prod-eu and prod-us"),
    Case("POST", "/api/v1/hosts", only(ADMIN, 201), body=lambda u: {"name": unique("gw-h", u), "kind": "local",
                                                                      "labels": ["lab"]}),
    Case("GET", "/api/v1/scripts", everyone(200)),
    Case("GET", "/api/v1/scripts/{name}", everyone(200), fixed(name=PAY_US)),
    Case("POST", "/api/v1/scripts", only(AUTHORS, 201),
         body=lambda u: {"name": unique("gw-new", u), "interpreter": "sh", "host": EU, "content": "echo new\n"}),
    Case("POST", "/api/v1/scripts/{name}/versions", only(AUTHORS, 200), fixed(name=OPS_EU),
         body=lambda u: {"content": f"echo {u}\n", "comment": "matrix"}),
    Case("DELETE", "/api/v1/scripts/{name}", only(AUTHORS, 204), a_script),
    Case("GET", "/api/v1/scripts/{name}/versions", everyone(200), fixed(name=PAY_EU)),
    Case("GET", "/api/v1/scripts/{name}/versions/{number}", everyone(200), fixed(name=PAY_EU, number=1)),
    Case("GET", "/api/v1/scripts/{name}/diff", everyone(200), fixed(name=PAY_EU), query={"from": 1, "to": 2}),
    Case("POST", "/api/v1/scripts/{name}/runs", only(OPERATORS, 201), fixed(name=PAY_EU),
         body=lambda u: {"args": [u]}, label="payments on prod-eu"),
    Case("POST", "/api/v1/scripts/{name}/runs", only(UNNARROWED_OPERATORS, 201), fixed(name=PAY_US),
         body=lambda u: {}, label="payments on prod-us"),
    Case("POST", "/api/v1/scripts/{name}/runs", only(UNNARROWED_OPERATORS, 201), fixed(name=OPS_EU),
         body=lambda u: {}, label="ops on prod-eu"),
    Case("POST", "/api/v1/scripts/{name}/runs", only(UNNARROWED_OPERATORS, 201), fixed(name=PAY_EU),
         body=lambda u: {"host": US}, label="payments moved to prod-us"),
    Case("POST", "/api/v1/runs/{run_id}/stop", only(OPERATORS, 200), run_of(PAY_EU), label="payments on prod-eu"),
    Case("POST", "/api/v1/runs/{run_id}/stop", only(UNNARROWED_OPERATORS, 200), run_of(PAY_US),
         label="payments on prod-us"),
    Case("GET", "/api/v1/runs", everyone(200)),
    Case("GET", "/api/v1/runs/{run_id}", everyone(200), run_of(PAY_US)),
    Case("GET", "/api/v1/runs/{run_id}/logs", everyone(200), run_of(PAY_US)),
    Case("GET", "/api/v1/access-rules", only(ADMIN, 200)),
    Case("POST", "/api/v1/access-rules", only(ADMIN, 201),
         body=lambda u: {"subject_kind": "user", "subject": "nobody", "actions": ["read"], "script_glob": "none-*"}),
    Case("GET", "/api/v1/access-rules/{rule_id}", only(ADMIN, 200), a_rule),
    Case("PUT", "/api/v1/access-rules/{rule_id}", only(ADMIN, 200), a_rule,
         body=lambda u: {"subject_kind": "user", "subject": "nobody", "actions": ["stop"]}),
    Case("DELETE", "/api/v1/access-rules/{rule_id}", only(ADMIN, 204), a_rule),
    Case("GET", "/api/v1/audit-events", only(ADMIN, 200)),
    Case("GET", "/api/v1/webhooks", only(ADMIN, 200)),
    Case("POST", "/api/v1/webhooks", only(ADMIN, 201), body=lambda u: {"script": PAY_EU}),
    Case("GET", "/api/v1/webhooks/{hook_id}", only(ADMIN, 200), a_hook),
    Case("PUT", "/api/v1/webhooks/{hook_id}", only(ADMIN, 200), a_hook, body=lambda u: {"max_per_minute": 5}),
    Case("POST", "/api/v1/webhooks/{hook_id}/secret", only(ADMIN, 200), a_hook),
    Case("DELETE", "/api/v1/webhooks/{hook_id}", only(ADMIN, 204), a_hook),
    Case("GET", "/api/v1/webhooks/{hook_id}/deliveries", only(ADMIN, 200), a_hook),
    Case("GET", "/api/v1/webhooks/{hook_id}/refusals", only(ADMIN, 200), a_hook),
    Case("PATCH", "/api/v1/scripts/{name}", only(AUTHORS, 200), fixed(name=OPS_EU),
         body=lambda u: {"description": f"by {u}", "retries": 1}),
    Case("PATCH", "/api/v1/scripts/{name}", only(ADMIN, 200), fixed(name=QUIET),
         body=lambda u: {"schedule": "0 3 * * *", "timezone": "Europe/Paris"}, label="a schedule needs start too"),
    Case("GET", "/api/v1/schedules/preview", everyone(200), query={"cron": "0 3 * * MON", "timezone": "Europe/Paris"}),
    Case("GET", "/api/v1/me/permissions", everyone(200)),
    Case("GET", "/api/v1/access/preview", only(ADMIN, 200),
         query={"user": "paula", "role": "sms-operator", "group": "team-payments"}),
    Case("GET", "/api/v1/hosts/{name}/host-key", only(ADMIN, 200), fixed(name=SSH)),
    Case("POST", "/api/v1/hosts/{name}/trust", only(ADMIN, 200), fixed(name=SSH),
         body=lambda u: {"fingerprint": SSH_KEY["fingerprint"]}),
    Case("POST", "/api/v1/hosts/{name}/check", only(ADMIN, 200), fixed(name=SSH)),
    Case("PUT", "/api/v1/hosts/{name}/labels", only(ADMIN, 200), fixed(name=SSH), body=lambda u: {"labels": ["lab", f"by={u}"]}),
]
#: For each capability of ``GET /me/permissions``, the matrix case whose allowed users it must name.
CAPABILITY_CASES = {
    "script.read": "GET /api/v1/scripts/{name}", "script.add": "POST /api/v1/scripts",
    "script.edit": "PATCH /api/v1/scripts/{name}", "script.remove": "DELETE /api/v1/scripts/{name}",
    "run.read": "GET /api/v1/runs", "run.start": "POST /api/v1/scripts/{name}/runs payments on prod-eu",
    "run.stop": "POST /api/v1/runs/{run_id}/stop payments on prod-eu", "host.read": "GET /api/v1/hosts/{name}",
    "host.add": "POST /api/v1/hosts", "host.trust": "POST /api/v1/hosts/{name}/trust",
    "host.check": "POST /api/v1/hosts/{name}/check", "host.labels": "PUT /api/v1/hosts/{name}/labels",
    "host-group.manage": "POST /api/v1/host-groups", "access.manage": "POST /api/v1/access-rules",
    "access.preview": "GET /api/v1/access/preview", "webhook.manage": "POST /api/v1/webhooks",
    "audit.read": "GET /api/v1/audit-events",
}
#: Signed by its secret, not by a token: an unsigned call is refused whoever's token it carries.
WEBHOOK = Case("POST", "/hooks/{hook_id}", everyone(401), a_hook, body=lambda u: {"x": 1})


def route_keys(app) -> set[tuple[str, str]]:
    keys = set()
    for context in iter_route_contexts(app.routes):
        for method in getattr(context, "methods", None) or {"WEBSOCKET"}:
            keys.add((method, context.path))
    return keys


def test_every_route_is_in_the_matrix_or_owned_elsewhere(gateway):  # noqa: F811
    listed = {(case.method, case.route) for case in [*CASES, WEBHOOK]}
    unlisted = route_keys(gateway.app) - listed - NOT_SMS_API
    assert not unlisted, f"routes missing from the authorization matrix: {sorted(unlisted)}"
    assert not listed - route_keys(gateway.app), "the matrix lists routes the app does not have"


def newest_audit_id(gateway: Gateway) -> int:  # noqa: F811
    with gateway.catalog.session() as s:
        events = list_audit(s, limit=1)
    return events[0].id if events else 0


async def request(gateway: Gateway, case: Case, user: str | None, params: dict[str, Any]) -> httpx.Response:  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        return await client.request(
            case.method, case.route.format(**params), params=case.query, headers=gateway.headers(user),
            json=case.body(user or "anonymous") if case.body else None,
        )


async def state_of(gateway: Gateway) -> str:
    """Every catalog row but the audit trail and sessions, and Prefect's blocks (their fields: pinned
    host keys, labels), deployments (their schedules, paused or not) and runs: what a refused call must
    leave as it was."""
    tables = MetaData()
    tables.reflect(gateway.catalog.engine)
    with gateway.catalog.engine.connect() as connection:
        rows_text = [f"{table.name}: {row!r}" for table in tables.sorted_tables
                     if table.name not in ("audit_events", "gateway_sessions")
                     for row in connection.execute(select(table))]
    async with get_client() as client:
        blocks = sorted(f"{block.name}: {block.data!r}" for block in await client.read_block_documents(include_secrets=False))
        deployments = sorted(
            f"{d.name}: paused={d.paused} {[(s.schedule.model_dump_json(), s.active) for s in d.schedules]}"
            for d in await client.read_deployments()
        )
        runs = await client.count_flow_runs()
    return "\n".join([*rows_text, *blocks, *deployments, repr(runs)])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_authorization_matrix(gateway, world, case):  # noqa: F811
    problems = []
    for user in USERS:
        params = await case.params(world)
        before = newest_audit_id(gateway)
        expected = case.allowed.get(user, 403)
        state = await state_of(gateway) if expected == 403 and case.method != "GET" else None
        reply = await request(gateway, case, user, params)
        if reply.status_code != expected:
            problems.append(f"{user}: expected {expected}, got {reply.status_code} {reply.text[:300]}")
            continue
        if state is not None and await state_of(gateway) != state:
            problems.append(f"{user}: the refused {case.id} changed the catalog or Prefect")
        with gateway.catalog.session() as s:
            events = [e for e in list_audit(s, actor=user, limit=5) if e.id > before and e.action.startswith("api.")]
        if expected != 403 and case.quiet_read:
            if events:
                problems.append(f"{user}: an allowed read of the catalog is not audited, found {events}")
            continue
        if len(events) != 1:
            problems.append(f"{user}: expected one audit event, found {events}")
            continue
        [event] = events
        outcome = "denied" if expected == 403 else "ok"
        if (event.outcome, event.client) != (outcome, "127.0.0.1") or not event.subject:
            problems.append(f"{user}: audit event {event.action} {event.outcome} from {event.client!r}")
        if expected == 403 and (user not in reply.json()["detail"] or event.detail.get("reason") != reply.json()["detail"]):
            problems.append(f"{user}: the 403 body and audit must carry the reason: {reply.text}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_without_a_token_every_route_is_401(gateway, world, case):  # noqa: F811
    reply = await request(gateway, case, None, await case.params(world))
    assert reply.status_code == 401, reply.text


async def test_unsigned_webhook_is_401_whatever_the_token(gateway, world):  # noqa: F811
    for user in (*USERS, None):
        reply = await request(gateway, WEBHOOK, user, await WEBHOOK.params(world))
        assert reply.status_code == WEBHOOK.allowed.get(user or "", 401), reply.text


async def test_my_permissions_name_the_users_the_routes_allow(gateway, world):  # noqa: F811
    """``can`` (what the console shows) and the routes (what the gateway enforces) agree for every user."""
    cases = {case.id: case for case in CASES}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        can = {user: (await client.get("/api/v1/me/permissions", headers=gateway.headers(user))).json()["can"]
               for user in USERS}
    assert set(CAPABILITY_CASES) == set(can["adam"])
    for capability, case_id in CAPABILITY_CASES.items():
        allowed = {user for user in USERS if can[user][capability]}
        assert allowed == set(cases[case_id].allowed), f"{capability}: /me/permissions says {allowed}, {case_id} allows {set(cases[case_id].allowed)}"


async def test_narrowed_denial_explains_itself(gateway, world):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        reply = await client.post(f"/api/v1/scripts/{PAY_US}/runs", json={}, headers=gateway.headers("paula"))
    assert reply.status_code == 403
    detail = reply.json()["detail"]
    assert "paula may start only as access rules allow" in detail
    assert "group team-payments" in detail and "tagged payments on hosts labelled prod-eu" in detail
    assert f"script {PAY_US} (tags: payments) on host {US} (labels: prod-us) matches none" in detail


async def test_api_results(gateway, world):  # noqa: F811
    """What allowed calls return: labels, filtered lists, the diff, a started run with its args."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        viola, adam = gateway.headers("viola"), gateway.headers("adam")
        hosts = {h["name"]: h for h in (await client.get("/api/v1/hosts", headers=viola)).json()}
        assert hosts[EU]["labels"] == ["prod-eu"] and hosts[EU]["kind"] == "local"
        diff = (await client.get(f"/api/v1/scripts/{PAY_EU}/diff", params={"from": 1, "to": 2}, headers=viola)).json()
        assert "-echo one" in diff["diff"] and "+echo two" in diff["diff"]
        version = (await client.get(f"/api/v1/scripts/{PAY_EU}/versions/2", headers=viola)).json()
        assert version["content"] == "echo two\n" and version["author"] == "setup"
        started = await client.post(f"/api/v1/scripts/{PAY_EU}/runs", json={"args": ["a b", "$(x)"]},
                                    headers=gateway.headers("otto"))
        run_id = started.json()["run_id"]
        shown = (await client.get(f"/api/v1/runs/{run_id}", headers=viola)).json()
        assert (shown["script"], shown["host"], shown["state"]) == (PAY_EU, EU, "SCHEDULED")
        stopped = (await client.post(f"/api/v1/runs/{run_id}/stop", headers=gateway.headers("paula"))).json()
        assert stopped == {"run_id": run_id, "state": "CANCELLED"}
        again = await client.post(f"/api/v1/runs/{run_id}/stop", headers=gateway.headers("paula"))
        assert again.status_code == 409 and "already ended" in again.json()["detail"]
        created = await client.post("/api/v1/webhooks", json={"script": PAY_EU}, headers=adam)
        assert created.status_code == 201 and len(created.json()["secret"]) >= 40
        listed = (await client.get("/api/v1/webhooks", params={"script": PAY_EU}, headers=adam)).json()
        assert all("secret" not in hook for hook in listed) and created.json()["id"] in {h["id"] for h in listed}
        audit = (await client.get("/api/v1/audit-events", params={"actor": "otto", "action": "api.run.start"},
                                  headers=adam)).json()
        assert audit[0]["detail"]["run_id"] == run_id and audit[0]["client"] == "127.0.0.1"
    from prefect import get_client

    async with get_client() as prefect:
        flow_run = await prefect.read_flow_run(uuid.UUID(run_id))
    assert flow_run.parameters["args"] == ["a b", "$(x)"]
    assert {"sms-trigger:api", "sms-user:otto"} <= set(flow_run.tags)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/v1/scripts/no-such-script", None, 404),
        ("GET", "/api/v1/hosts/no-such-host", None, 404),
        ("GET", f"/api/v1/scripts/{PAY_EU}/versions/99", None, 404),
        ("GET", "/api/v1/runs/not-a-uuid", None, 404),
        ("GET", "/api/v1/access-rules/999999", None, 404),
        ("GET", "/api/v1/webhooks/wh_0000000000000000", None, 404),
        ("POST", "/api/v1/scripts", {"name": "Bad Name", "interpreter": "sh", "host": "x"}, 422),
        ("POST", "/api/v1/scripts", {"name": "gw-cobol", "interpreter": "cobol", "host": "x", "content": "x"}, 422),
        ("POST", "/api/v1/scripts", {"name": PAY_EU, "interpreter": "sh", "host": EU, "content": "x"}, 409),
        ("POST", "/api/v1/scripts", {"name": "gw-big", "interpreter": "sh", "host": EU, "timeout_seconds": 10**20}, 422),
        ("POST", "/api/v1/scripts", {"name": "gw-big", "interpreter": "sh", "host": EU,
                                     "schedules": [{"interval_seconds": 10**20}]}, 422),
        ("POST", "/api/v1/hosts", {"name": EU, "kind": "local"}, 409),
        ("POST", "/api/v1/hosts", {"name": "gw-nokey", "kind": "ssh"}, 422),
        ("POST", "/api/v1/access-rules", {"subject_kind": "team", "subject": "x", "actions": ["read"]}, 422),
        ("POST", "/api/v1/access-rules", {"subject_kind": "user", "subject": "x", "actions": ["admin"]}, 422),
        ("POST", "/api/v1/webhooks", {"script": PAY_EU, "arguments": [{"field": "a", "pattern": "("}]}, 422),
        ("POST", "/api/v1/webhooks", {"script": "no-such-script"}, 404),
    ],
)
async def test_errors_are_clear_4xx(gateway, world, method, path, body, status):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        reply = await client.request(method, path, json=body, headers=gateway.headers("adam"))
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"]
