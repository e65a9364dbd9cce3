"""Fleet targets through the real gateway (Keycloak tokens, a real Prefect server): host groups, the
selector preview and the judge of a start on a selection. paula is an sms-operator narrowed by a rule
to scripts tagged payments on hosts labelled prod-eu: her preview reaches every host, but a start on a
selection that reaches one prod-us host is refused as a whole, naming it, and nothing starts."""

from __future__ import annotations

import uuid

import httpx
import pytest

from blocks.hosts import LocalHost
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, list_audit, list_runs
from sms_plugin.catalog import access as rows
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
EU = [f"ft-eu{n}-{SUFFIX}" for n in (1, 2)]
US = f"ft-us1-{SUFFIX}"
SCRIPT = f"ft-pay-{SUFFIX}"
EVERY = f"ft-*-{SUFFIX}"


@pytest.fixture(scope="module")
async def fleet(gateway: Gateway) -> Gateway:  # noqa: F811
    for name in EU:
        await host_services.add(name, LocalHost(labels=["prod-eu", "role=web"], admins_only=False))
    await host_services.add(US, LocalHost(labels=["prod-us", "role=web"], admins_only=False))
    await script_services.add(gateway.catalog, ScriptSpec(name=SCRIPT, interpreter="sh", host=EU[0], tags=["payments"]),
                              "echo pay\n", author="setup")
    with gateway.catalog.session() as s:
        rows.add_rule(s, created_by="setup", subject_kind="group", subject="team-payments", actions=["start", "stop"],
                      script_tag="payments", host_label="prod-eu")
    return gateway


async def call(gateway: Gateway, user: str, method: str, path: str, **kwargs) -> httpx.Response:  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        return await client.request(method, f"/api/v1{path}", headers=gateway.headers(user), **kwargs)


async def test_narrowed_operator_previews_but_is_refused_a_start_reaching_a_forbidden_host(fleet):
    preview = await call(fleet, "paula", "GET", "/hosts", params={"select": f"{EVERY} AND role=web"})
    assert preview.status_code == 200, preview.text
    assert [host["name"] for host in preview.json()] == sorted([*EU, US])

    runs_before = len(list_runs_of(fleet))
    refused = await call(fleet, "paula", "POST", "/selections/judge", json={"selector": EVERY, "script": SCRIPT})
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert detail.startswith(f"paula may not start on 1 of the 3 selected host(s): {US}; the selection is refused as a whole")
    assert all(name not in detail.split(";")[0] for name in EU)
    with fleet.catalog.session() as s:
        [event] = list_audit(s, actor="paula", action="api.selection.judge", limit=1)
    assert (event.outcome, event.detail["refused"], event.detail["hosts"]) == ("denied", [US], 3)
    assert len(list_runs_of(fleet)) == runs_before  # nothing started

    allowed = await call(fleet, "paula", "POST", "/selections/judge",
                         json={"selector": f"{EVERY} AND NOT prod-us", "script": SCRIPT})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["hosts"] == sorted(EU)
    assert (await call(fleet, "otto", "POST", "/selections/judge", json={"selector": EVERY, "script": SCRIPT})).status_code == 200
    viewer = await call(fleet, "viola", "POST", "/selections/judge", json={"selector": EVERY})
    assert viewer.status_code == 403 and "'start' needs role sms-operator" in viewer.json()["detail"]


def list_runs_of(gateway: Gateway) -> list:  # noqa: F811
    with gateway.catalog.session() as s:
        return list_runs(s, script_name=SCRIPT)


async def test_malformed_selectors_are_a_400_naming_the_column(fleet):
    reply = await call(fleet, "viola", "GET", "/hosts", params={"select": "role=web AND (prod-eu"})
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("selector error at column 22: expected ')', found the end")
    judged = await call(fleet, "otto", "POST", "/selections/judge", json={"selector": "NOT"})
    assert judged.status_code == 400 and "column 4" in judged.json()["detail"]
    empty = await call(fleet, "viola", "GET", "/hosts", params={"select": f"nothing-{SUFFIX}"})
    assert (empty.status_code, empty.json()) == (200, [])


async def test_host_groups_admins_change_viewers_read_cycles_refused(fleet):
    eu, web = f"ft-eu-{SUFFIX}", f"ft-web-{SUFFIX}"
    created = await call(fleet, "adam", "POST", "/host-groups",
                         json={"name": eu, "selector": f"{EVERY} AND prod-eu", "description": "EU"})
    assert created.status_code == 201, created.text
    assert (await call(fleet, "adam", "POST", "/host-groups", json={"name": web, "selector": f"@{eu} OR {US}"})).status_code == 201
    denied = await call(fleet, "viola", "POST", "/host-groups", json={"name": f"ft-x-{SUFFIX}", "selector": "x"})
    assert denied.status_code == 403
    assert (await call(fleet, "viola", "GET", f"/host-groups/{f'ft-x-{SUFFIX}'}")).status_code == 404  # not created
    shown = await call(fleet, "viola", "GET", f"/host-groups/{web}")
    assert shown.json()["selector"] == f"@{eu} OR {US}" and shown.json()["created_by"] == "adam"
    picked = await call(fleet, "viola", "GET", "/hosts", params={"select": f"@{web}"})
    assert [host["name"] for host in picked.json()] == sorted([*EU, US])

    cycle = await call(fleet, "adam", "PUT", f"/host-groups/{eu}", json={"selector": f"@{web} AND prod-eu"})
    assert cycle.status_code == 400
    assert f"would refer to itself: {eu} -> {web} -> {eu}" in cycle.json()["detail"]
    assert (await call(fleet, "viola", "GET", f"/host-groups/{eu}")).json()["selector"] == f"{EVERY} AND prod-eu"
    in_use = await call(fleet, "adam", "DELETE", f"/host-groups/{eu}")
    assert in_use.status_code == 409 and web in in_use.json()["detail"]
    assert (await call(fleet, "adam", "DELETE", f"/host-groups/{web}")).status_code == 204
    assert (await call(fleet, "adam", "DELETE", f"/host-groups/{eu}")).status_code == 204
    unknown = await call(fleet, "adam", "POST", "/host-groups", json={"name": eu, "selector": "a OR @gone"})
    assert unknown.status_code == 400 and "column 6: there is no host group 'gone'" in unknown.json()["detail"]
