"""A fleet run may not reach one host its caller may not start on. paula is an sms-operator narrowed
by a rule to scripts tagged payments on hosts labelled prod-eu; two prod-eu hosts and one prod-us
host exist. Through the REST API (a selector), a webhook (a payload's selector) and the Prefect API
behind the gateway (a list of names, plain and disguised: look-alike letters, blanks, case, globs),
every start that reaches the prod-us host is refused with the reason naming it, and no flow run is
created, no run recorded. The same start on the prod-eu hosts alone passes (the control)."""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from blocks.hosts import LocalHost
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, ScriptSpec, list_runs
from sms_plugin.catalog import access as rows
from sms_plugin.deploy import deployment_name, sync_script
from sms_plugin.errors import NotFound
from sms_plugin.gateway.signing import sms_signature
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
EU = [f"fa-eu{n}-{SUFFIX}" for n in (1, 2)]
US = f"fa-us1-{SUFFIX}"
SCRIPT = f"fa-pay-{SUFFIX}"
EVERY = f"fa-*-{SUFFIX}"
IDLE_POOL = "sms-gateway-idle"  # no worker serves it: an admitted run stays Scheduled


async def _fleet(catalog: Catalog) -> None:
    """The three hosts, the payments script on the first EU host, and paula's narrowing rule."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        for name in EU:
            await host_services.add(name, LocalHost(labels=["prod-eu", "role=web"], admins_only=False), overwrite=True)
        await host_services.add(US, LocalHost(labels=["prod-us", "role=web"], admins_only=False), overwrite=True)
        try:
            script = script_services.show(catalog, SCRIPT)
        except NotFound:
            script = await script_services.add(
                catalog, ScriptSpec(name=SCRIPT, interpreter="sh", host=EU[0], tags=["payments"]), "echo pay\n", author="setup"
            )
        await sync_script(script)  # the deployment, in the Prefect this process talks to now
    with catalog.session() as s:
        if not [r for r in rows.list_rules(s) if r.subject == "team-payments" and r.host_label == "prod-eu"]:
            rows.add_rule(s, created_by="setup", subject_kind="group", subject="team-payments",
                          actions=["start", "stop"], script_tag="payments", host_label="prod-eu")


@pytest.fixture(scope="module")
async def fleet(gateway: Gateway) -> Gateway:  # noqa: F811
    await _fleet(gateway.catalog)
    return gateway


async def _nothing_ran(catalog: Catalog) -> tuple[int, int]:
    """Flow runs of the script's deployment in Prefect, and run records in the catalog."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(SCRIPT))
        flow_runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    with catalog.session() as s:
        return len(flow_runs), len(list_runs(s, script_name=SCRIPT, limit=1000))


async def test_rest_start_reaching_one_forbidden_host_is_refused_as_a_whole(fleet):
    before = await _nothing_ran(fleet.catalog)
    async with httpx.AsyncClient(base_url=fleet.url, timeout=60, headers=fleet.headers("paula")) as client:
        for selector in (EVERY, f"{EU[0]},{US}", f"prod-us AND {EVERY}", f"role=web AND {EVERY}", f"NOT prod-eu AND {EVERY}"):
            reply = await client.post(f"/api/v1/scripts/{SCRIPT}/runs", json={"hosts": selector})
            assert reply.status_code == 403, (selector, reply.text)
            assert reply.json()["detail"].startswith(f"paula may not start on 1 of "), reply.text
            assert US in reply.json()["detail"]
        picks_none = await client.post(f"/api/v1/scripts/{SCRIPT}/runs", json={"hosts": f"nothing-{SUFFIX}"})
        assert picks_none.status_code == 403 and "picks no host" in picks_none.json()["detail"]
        for disguised in (f"fa-us1-{SUFFIX} ", f"FA-US1-{SUFFIX}", f"fa\u2010us1-{SUFFIX}", f"fa-us1-{SUFFIX}\u200b"):
            reply = await client.post(f"/api/v1/scripts/{SCRIPT}/runs", json={"hosts": disguised})
            assert reply.status_code in (400, 403), (disguised, reply.text)  # a parse error, or it picks nothing
        both = await client.post(f"/api/v1/scripts/{SCRIPT}/runs", json={"hosts": EU[0], "host": EU[0]})
        assert both.status_code == 422 and "not both" in both.json()["detail"]
    assert await _nothing_ran(fleet.catalog) == before


def _signed(secret: str, body: bytes) -> dict[str, str]:
    import time

    stamp = int(time.time())
    return {"Content-Type": "application/json", "X-SMS-Timestamp": str(stamp), "X-SMS-Signature": sms_signature(secret, stamp, body)}


async def test_a_webhook_payload_cannot_reach_beyond_its_scripts_hosts(fleet):
    created = httpx.post(f"{fleet.url}/api/v1/webhooks", json={"script": SCRIPT}, headers=fleet.headers("adam"), timeout=60)
    assert created.status_code == 201, created.text
    hook, secret = created.json()["id"], created.json()["secret"]
    operator = httpx.post(f"{fleet.url}/api/v1/webhooks", json={"script": SCRIPT}, headers=fleet.headers("paula"), timeout=60)
    assert operator.status_code == 403  # webhooks are made by admins
    before = await _nothing_ran(fleet.catalog)
    for payload in ({"hosts": EVERY}, {"hosts": US}, {"hosts": f"{EU[0]},{US}"}, {"hosts": ["x"]},
                    {"hosts": EU[0], "policy": {"parallel": "many"}}, {"policy": {"parallel": 2}}):
        body = json.dumps(payload).encode()
        reply = httpx.post(f"{fleet.url}/hooks/{hook}", content=body, headers=_signed(secret, body), timeout=60)
        assert reply.status_code in (403, 422), (payload, reply.text)
        if payload.get("hosts") in (EVERY, US):
            assert reply.status_code == 403 and US in reply.json()["detail"]
    assert await _nothing_ran(fleet.catalog) == before


# ---------------------------------------------------------------- the Prefect API behind the gateway


@contextmanager
def prefect_of(bed) -> Iterator[None]:
    """This process's Prefect client talks to the gateway bed's own Prefect while the block runs."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: bed.prefect.api_url, PREFECT_API_AUTH_STRING: bed.auth_string}):
        yield


@pytest.fixture(scope="module")
async def proxied(gateway_bed, bed) -> str:
    """The fleet in the gateway bed's Prefect; the id of the payments script's deployment there."""
    catalog = Catalog()
    catalog.upgrade()
    with prefect_of(gateway_bed):
        await _fleet(catalog)
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(deployment_name(SCRIPT))
    catalog.dispose()
    return str(deployment.id)


def _create(bed, user: str, deployment: str, parameters: dict) -> httpx.Response:
    return bed.client(user).post(f"/prefect/api/deployments/{deployment}/create_flow_run", json={"parameters": parameters})


def test_prefect_api_start_with_one_forbidden_name_is_refused(bed, proxied):
    before = bed.counts()
    refused = _create(bed, "paula", proxied, {"hosts": [*EU, US]})
    assert refused.status_code == 403, refused.text
    assert f"paula may not start on 1 of the 3 selected host(s): {US}" in refused.json()["detail"]
    for hosts, why in (
        (EVERY, "must be a list of host names"),
        (f"{EU[0]},{EU[1]}", "must be a list of host names"),
        ([EU[0], EU[0]], "more than once"),
        ([*EU, "fa-*"], "unknown host"),
        ([f"nobody-{SUFFIX}"], "unknown host"),
        ([], "names no host"),
        ([f"h{n}" for n in range(5001)], "at most 5000"),
        ([EU[0], {"name": US}], "strings"),
    ):
        reply = _create(bed, "paula", proxied, {"hosts": hosts})
        assert reply.status_code == 403 and why in reply.json()["detail"], (hosts, reply.text)
    both = _create(bed, "paula", proxied, {"hosts": EU, "host": EU[0]})
    assert both.status_code == 403 and "not both" in both.json()["detail"]
    bad_policy = _create(bed, "paula", proxied, {"hosts": EU, "policy": {"batch": "half"}})
    assert bad_policy.status_code == 403 and "batch" in bad_policy.json()["detail"]
    assert bed.counts() == before, "a refused start created something"

    allowed = _create(bed, "paula", proxied, {"hosts": EU, "policy": {"parallel": 2}})  # the control
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["parameters"]["hosts"] == EU


def _disguised(name: str) -> st.SearchStrategy[str]:
    """``name`` as a person, a shell or a lenient parser might read it, but not byte for byte."""
    look_alike = st.sampled_from(["\u2010", "\u2011", "\u2212", "\u0435", "\u0455", "\uff0d", "\u200b", "\u00a0", "\u0131"])
    blank = st.sampled_from([" ", "\t", "\n", "\u3000", "\ufeff"])
    glob = st.sampled_from(["*", "?", "[a-z]", "[!x]"])
    at = st.integers(min_value=0, max_value=len(name))
    return st.one_of(
        st.builds(lambda i, c: name[:i] + c + name[i:], at, st.one_of(look_alike, blank, glob)),
        st.builds(lambda i, c: name[:i] + c + name[i + 1:], st.integers(0, len(name) - 1), st.one_of(look_alike, glob)),
        st.builds(lambda i: name[:i].upper() + name[i:], st.integers(1, len(name))),
        st.builds(lambda pad: pad + name + pad, st.text(string.whitespace, min_size=1, max_size=2)),
    ).filter(lambda variant: variant != name)


def _flow_runs(bed) -> int:
    return bed.prefect.post("/flow_runs/count", json={}).raise_for_status().json()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=_disguised(US))
def test_a_disguised_forbidden_name_is_refused_and_creates_nothing(bed, proxied, variant: str):
    before = _flow_runs(bed)
    reply = _create(bed, "paula", proxied, {"hosts": [EU[0], variant]})
    assert reply.status_code == 403, (variant, reply.text)
    assert "unknown host" in reply.json()["detail"]
    assert _flow_runs(bed) == before


OWN = f"fs-own-{SUFFIX}"
OPEN = f"fs-open-{SUFFIX}"
SCHEDULED = f"fs-sched-{SUFFIX}"
WEEKLY = f"fs-weekly-{SUFFIX}"


@pytest.fixture(scope="module")
async def author_operator(fleet: Gateway) -> AsyncIterator[str]:
    """A realm user with sms-author and sms-operator, no access rule; a host of the worker's own
    machine (admin-only) and an open one; a paused script whose targets pick both (set up by an admin)."""
    name = f"fs-ada-{SUFFIX}"
    keycloak = fleet.keycloak
    user_id = keycloak.add_user(name, ("sms-author", "sms-operator"))  # type: ignore[attr-defined]
    await host_services.add(OWN, LocalHost(admins_only=True), overwrite=True)
    await host_services.add(OPEN, LocalHost(admins_only=False), overwrite=True)
    spec = ScriptSpec(name=SCHEDULED, interpreter="sh", targets=f"fs-*-{SUFFIX}", enabled=False)
    await script_services.add(fleet.catalog, spec, "id\n", author="setup")
    weekly = [{"cron": "0 3 * * 1", "timezone": "UTC"}]
    spec = ScriptSpec(name=WEEKLY, interpreter="sh", targets=OPEN, schedules=weekly, enabled=False)
    await script_services.add(fleet.catalog, spec, "id\n", author="setup")
    yield name
    with keycloak.admin() as admin:  # type: ignore[attr-defined]
        admin.delete(f"/users/{user_id}")


async def test_a_schedule_cannot_start_a_fleet_run_on_a_host_its_author_may_not_start_on(fleet, author_operator):
    """A schedule (or a webhook) starts its script unjudged: saving a schedule, moving a scheduled
    script's targets, and authoring a script with targets judge start and author on every host the
    targets pick, not on the absent single host (which let non-admins reach the admin-only host)."""
    name = f"fs-add-{SUFFIX}"
    weekly = [{"cron": "0 3 * * 1", "timezone": "UTC"}]
    async with httpx.AsyncClient(base_url=fleet.url, timeout=60, headers=fleet.headers(author_operator)) as client:
        added = await client.post("/api/v1/scripts", json={
            "name": name, "interpreter": "sh", "targets": f"fs-*-{SUFFIX}", "schedules": weekly,
            "enabled": False, "content": "id\n"})
        assert added.status_code == 403, added.text
        assert OWN in added.json()["detail"] and OPEN not in added.json()["detail"].split("selected host(s):")[1]
        with pytest.raises(NotFound):
            script_services.show(fleet.catalog, name)

        scheduled = await client.patch(f"/api/v1/scripts/{SCHEDULED}", json={"schedule": "0 3 * * 1"})
        assert scheduled.status_code == 403 and OWN in scheduled.json()["detail"], scheduled.text
        assert script_services.show(fleet.catalog, SCHEDULED).schedules == []
        retargeted = await client.patch(f"/api/v1/scripts/{WEEKLY}", json={"targets": f"fs-*-{SUFFIX}"})
        assert retargeted.status_code == 403 and OWN in retargeted.json()["detail"], retargeted.text
        assert script_services.show(fleet.catalog, WEEKLY).targets == OPEN

        control = await client.post("/api/v1/scripts", json={
            "name": name, "interpreter": "sh", "targets": OPEN, "schedules": weekly, "enabled": False, "content": "id\n"})
        assert control.status_code == 201, control.text
        assert (await client.delete(f"/api/v1/scripts/{name}")).status_code == 204

    # anna (author only) may not change the code a schedule or webhook of SCHEDULED runs on the admin-only host
    async with httpx.AsyncClient(base_url=fleet.url, timeout=60, headers=fleet.headers("anna")) as client:
        pushed = await client.post(f"/api/v1/scripts/{SCHEDULED}/versions", json={"content": "reboot\n"})
        assert pushed.status_code == 403 and OWN in pushed.json()["detail"], pushed.text
        retargeted = await client.patch(f"/api/v1/scripts/{WEEKLY}", json={"targets": f"fs-*-{SUFFIX}"})
        assert retargeted.status_code == 403 and OWN in retargeted.json()["detail"], retargeted.text
    assert script_services.version(fleet.catalog, SCHEDULED).content == "id\n"
    assert script_services.show(fleet.catalog, WEEKLY).targets == OPEN


async def test_a_retry_of_a_run_whose_hosts_a_selector_picks_is_refused(bed, gateway_bed, proxied):
    """A scheduled run of a script with targets has no hosts of its own: a retry would pick them again,
    here the worker's own machine among them. otto (operator, no rule) may not retry it through the
    Prefect API; the run stays Failed."""
    name, own = f"fa-sel-{SUFFIX}", f"fa-own-{SUFFIX}"

    async def scheduled_run() -> str:
        catalog = Catalog()
        with prefect_of(gateway_bed), pytest.MonkeyPatch.context() as patch:
            patch.setenv("SMS_WORK_POOL", IDLE_POOL)
            await host_services.add(own, LocalHost(admins_only=True), overwrite=True)
            script = await script_services.add(catalog, ScriptSpec(name=name, interpreter="sh", targets=f"{own},{EU[0]}"),
                                               "id\n", author="setup")
            await sync_script(script)
            async with get_client() as client:
                deployment = await client.read_deployment_by_name(deployment_name(name))
        catalog.dispose()
        run = bed.prefect.post(f"/deployments/{deployment.id}/create_flow_run", json={"parameters": {"script": name}})
        run_id = run.raise_for_status().json()["id"]
        bed.prefect.post(f"/flow_runs/{run_id}/set_state",
                         json={"state": {"type": "FAILED", "name": "Failed"}, "force": True}).raise_for_status()
        return run_id

    run_id = await scheduled_run()
    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}}
    refused = bed.client("otto").post(f"/prefect/api/flow_runs/{run_id}/set_state", json=retry)
    assert refused.status_code == 403, refused.text
    assert "selector picks when it runs again" in refused.json()["detail"]
    assert bed.prefect.get(f"/flow_runs/{run_id}").raise_for_status().json()["state"]["type"] == "FAILED"
