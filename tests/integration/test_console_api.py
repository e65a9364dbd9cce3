"""The console's REST routes behind the real gateway (Keycloak tokens per role, a real Prefect server,
the test bed's sshd): script settings reaching Prefect's deployment, the cron preview, trust on first
use by a confirmed fingerprint, the host check, labels, and the permissions the console reads.

Who may call which route is the authorization matrix's job (test_gateway_api.py); here: what the
calls do, what refused ones leave untouched, and that generated input is never a 500.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client

from blocks.hosts import LocalHost, SSHHost
from infra.testbed.sshd import SshServer
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, get_script, list_audit
from sms_plugin.catalog import access as rows
from sms_plugin.deploy import deployment_name
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture
from tests.conftest import run_suffix

pytestmark = pytest.mark.integration

SUFFIX = run_suffix()
ONE, TWO = f"ca-one-{SUFFIX}", f"ca-two-{SUFFIX}"
SCRIPT = f"ca-script-{SUFFIX}"
TEAM = f"ca-team-{SUFFIX}"
GENERATED = dict(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
async def scene(gateway: Gateway) -> Gateway:  # noqa: F811
    """Two local hosts open to every role, and a paused script on the first (its schedules make no runs)."""
    await host_services.add(ONE, LocalHost(labels=["site=one"], admins_only=False))
    await host_services.add(TWO, LocalHost(labels=["site=two"], admins_only=False))
    spec = ScriptSpec(name=SCRIPT, interpreter="sh", host=ONE, tags=["ops"], enabled=False)
    await script_services.add(gateway.catalog, spec, "echo hi\n", author="setup")
    return gateway


def call(gateway: Gateway, user: str, method: str, path: str, **kwargs) -> httpx.Response:  # noqa: F811
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        return client.request(method, f"/api/v1{path}", headers=gateway.headers(user), **kwargs)


async def script_and_deployment(gateway: Gateway, name: str) -> tuple[dict, list[tuple[str, str | None]], list[str]]:  # noqa: F811
    """The script's catalog row, its deployment's (cron, time zone) schedules and tags."""
    with gateway.catalog.session() as s:
        row = ScriptSpec.from_script(get_script(s, name)).model_dump()
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(name))
    schedules = [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]  # type: ignore[union-attr]
    return row, schedules, deployment.tags


async def test_settings_reach_the_catalog_and_the_deployment(scene):
    changed = call(scene, "anna", "PATCH", f"/scripts/{SCRIPT}", json={
        "host": TWO, "timeout_seconds": 60, "retries": 2, "retry_delay_seconds": 5, "single_instance": "queue",
        "description": "nightly", "tags": ["ops", "nightly"],
    })
    assert changed.status_code == 200, changed.text
    assert (changed.json()["host"], changed.json()["timeout_seconds"], changed.json()["tags"]) == (TWO, 60, ["ops", "nightly"])
    row, schedules, tags = await script_and_deployment(scene, SCRIPT)
    assert (row["retries"], row["retry_delay_seconds"], row["single_instance"], row["description"]) == (2, 5, "queue", "nightly")
    assert f"host:{TWO}" in tags and "nightly" in tags and schedules == []

    scheduled = call(scene, "adam", "PATCH", f"/scripts/{SCRIPT}", json={"schedule": "30 2 * * *", "timezone": "Europe/Paris"})
    assert scheduled.status_code == 200, scheduled.text
    assert (await script_and_deployment(scene, SCRIPT))[1] == [("30 2 * * *", "Europe/Paris")]
    moved = call(scene, "adam", "PATCH", f"/scripts/{SCRIPT}", json={"timezone": "America/New_York"})
    assert moved.json()["schedules"] == [{"cron": "30 2 * * *", "interval_seconds": None, "timezone": "America/New_York"}]
    assert (await script_and_deployment(scene, SCRIPT))[1] == [("30 2 * * *", "America/New_York")]
    cleared = call(scene, "adam", "PATCH", f"/scripts/{SCRIPT}", json={"schedule": None, "timeout_seconds": None})
    assert (cleared.json()["schedules"], cleared.json()["timeout_seconds"]) == ([], None)
    assert (await script_and_deployment(scene, SCRIPT))[1] == []
    with scene.catalog.session() as s:
        [event] = list_audit(s, actor="adam", action="api.script.settings", limit=1)
    assert event.outcome == "ok" and event.detail["changed"] == ["schedules", "timeout_seconds"]


async def test_targets_and_host_replace_each_other(scene):
    """``sms script set --targets`` / ``--host`` through the gateway: each replaces the other."""
    name = f"ca-moved-{SUFFIX}"
    await script_services.add(scene.catalog, ScriptSpec(name=name, interpreter="sh", host=ONE, enabled=False),
                              "echo hi\n", author="setup")
    fleet = call(scene, "anna", "PATCH", f"/scripts/{name}", json={"targets": "site=one,site=two"})
    assert fleet.status_code == 200, fleet.text
    row, _, tags = await script_and_deployment(scene, name)
    assert (row["host"], row["targets"]) == (None, "site=one,site=two") and f"host:{ONE}" not in tags
    single = call(scene, "anna", "PATCH", f"/scripts/{name}", json={"host": TWO})
    assert single.status_code == 200, single.text
    row, _, tags = await script_and_deployment(scene, name)
    assert (row["host"], row["targets"]) == (TWO, None) and f"host:{TWO}" in tags


@pytest.mark.parametrize(("user", "body", "status", "says"), [
    ("adam", {"host": "no-such-host"}, 400, "no host named 'no-such-host'"),
    ("adam", {"schedule": "* * * * *"}, 400, "fires every 60 s"),
    ("adam", {"schedule": "*/2 9-17 * * MON-FRI"}, 400, "shortest interval SMS schedules is 300 s"),
    ("adam", {"schedule": "0 3 * * *", "timezone": "Mars/Olympus"}, 400, "unknown time zone 'Mars/Olympus'"),
    ("adam", {"timezone": "Nowhere"}, 400, "unknown time zone 'Nowhere'"),
    ("adam", {"schedule": "61 * * * *"}, 400, "minute field '61' is invalid"),
    ("adam", {"schedule": "0 0 31 2 *"}, 400, "is not valid"),
    ("adam", {"host": None}, 422, "host cannot be null"),
    ("adam", {"targets": None}, 422, "targets cannot be null"),
    ("adam", {"targets": "site=one", "host": ONE}, 422, "not both"),
    ("adam", {"targets": "site=one AND"}, 422, "selector error"),
    ("adam", {"retries": 1000}, 422, "less than or equal to 100"),
    ("viola", {"description": "x"}, 403, "'author' needs role"),
    ("otto", {"description": "x"}, 403, "'author' needs role"),
    ("paula", {"description": "x"}, 403, "'author' needs role"),
    ("anna", {"schedule": "0 4 * * *"}, 403, "'start' needs role"),
])
async def test_refused_settings_name_the_mistake_and_change_nothing(scene, user, body, status, says):
    before = await script_and_deployment(scene, SCRIPT)
    reply = call(scene, user, "PATCH", f"/scripts/{SCRIPT}", json=body)
    assert reply.status_code == status, reply.text
    assert says in reply.text
    assert await script_and_deployment(scene, SCRIPT) == before


def test_schedule_preview(scene):
    reply = call(scene, "viola", "GET", "/schedules/preview",
                 params={"cron": "0 3 * * MON", "timezone": "Europe/Paris", "count": 3})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    runs = [datetime.fromisoformat(text) for text in body["next_runs"]]
    assert len(runs) == 3 and runs == sorted(runs) and body["shortest_gap_seconds"] == 7 * 86400
    assert all((run.weekday(), run.hour, run.minute) == (0, 3, 0) and run.utcoffset() for run in runs)
    assert "03:00" in body["explanation"]
    for params, says in [
        ({"cron": "*/1 * * * *"}, "fires every 60 s"),
        ({"cron": "0 3 * *"}, "must have 5 fields"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, "unknown time zone"),
    ]:
        refused = call(scene, "viola", "GET", "/schedules/preview", params=params)
        assert refused.status_code == 400 and says in refused.json()["detail"], refused.text
    assert call(scene, "viola", "GET", "/schedules/preview", params={"cron": "0 3 * * *", "count": 0}).status_code == 422


CRONS = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["*", "0", "5", "*/5", "1-3", "MON", "L", "W", "#2", "60", "?", ",", "-1"]),
             min_size=4, max_size=6).map(" ".join),
)
ZONES = st.one_of(st.text(max_size=30), st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata", "America/St_Johns"]))


@settings(**GENERATED)
@given(cron=CRONS, timezone=ZONES)
def test_generated_previews_are_answered_never_500(scene, cron, timezone):
    reply = call(scene, "viola", "GET", "/schedules/preview", params={"cron": cron, "timezone": timezone})
    assert reply.status_code in (200, 400, 422), reply.text


@settings(**GENERATED)
@given(cron=CRONS, timezone=ZONES)
def test_generated_schedules_are_answered_never_500(scene, cron, timezone):
    reply = call(scene, "adam", "PATCH", f"/scripts/{SCRIPT}", json={"schedule": cron, "timezone": timezone})
    assert reply.status_code in (200, 400, 422), reply.text


@settings(**GENERATED)
@given(labels=st.lists(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z]{1,8}=[a-z0-9]{1,8}", fullmatch=True)),
                       max_size=5))
def test_generated_labels_are_stored_or_refused_never_500(scene, labels):
    reply = call(scene, "adam", "PUT", f"/hosts/{TWO}/labels", json={"labels": labels})
    assert reply.status_code in (200, 422), reply.text
    if reply.status_code == 200:
        assert reply.json()["labels"] == list(dict.fromkeys(labels))


def sha256_fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a ``type base64`` public key line, computed here as ssh-keygen does."""
    digest = hashlib.sha256(base64.b64decode(key_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def ssh_host(server) -> SSHHost:
    return SSHHost(address=server.host, port=server.port, username=server.username,
                   private_key=server.private_key_pem, connect_timeout=5)


async def pinned(name: str) -> list[str]:
    host = await host_services.load_host(name)
    assert isinstance(host, SSHHost)
    return list(host.host_keys)


async def test_trust_on_first_use_by_the_confirmed_fingerprint(scene, ssh_server):
    name = f"ca-ssh-{SUFFIX}"
    await host_services.add(name, ssh_host(ssh_server))
    fingerprints = {sha256_fingerprint(line): " ".join(line.split()[:2]) for line in ssh_server.host_public_keys}

    shown = call(scene, "adam", "GET", f"/hosts/{name}/host-key")
    assert shown.status_code == 200, shown.text
    key = shown.json()
    assert fingerprints[key["fingerprint"]] == key["public_key"] and key["public_key"].startswith(key["key_type"])
    assert await pinned(name) == []  # shown, not stored

    unknown = call(scene, "adam", "POST", f"/hosts/{name}/check").json()
    assert (unknown["usable"], unknown["check"]["host_key"], unknown["check"]["authenticated"]) == (False, "unknown", False)

    other = next(fp for fp in fingerprints if fp != key["fingerprint"])  # the server's other key: not the one it shows
    for wrong in (other, "SHA256:" + "A" * 43):
        refused = call(scene, "adam", "POST", f"/hosts/{name}/trust", json={"fingerprint": wrong})
        assert refused.status_code == 409 and "the key changed since it was shown" in refused.json()["detail"]
        assert key["fingerprint"] in refused.json()["detail"]
        assert await pinned(name) == []
    assert call(scene, "adam", "POST", f"/hosts/{name}/trust", json={"fingerprint": "MD5:aa"}).status_code == 422

    trusted = call(scene, "adam", "POST", f"/hosts/{name}/trust", json={"fingerprint": key["fingerprint"]})
    assert trusted.status_code == 200 and trusted.json() == key
    assert await pinned(name) == [key["public_key"]]
    checked = call(scene, "adam", "POST", f"/hosts/{name}/check").json()
    assert (checked["usable"], checked["check"]["host_key"]) == (True, "match"), checked
    assert checked["check"]["interpreters"]["sh"]


async def test_a_key_changed_after_it_was_shown_is_not_trusted(scene):
    name = f"ca-rekeyed-{SUFFIX}"
    with SshServer() as first:
        await host_services.add(name, ssh_host(first))
        shown = call(scene, "adam", "GET", f"/hosts/{name}/host-key").json()
        port = first.port
    with SshServer(port=port):  # the same address, re-keyed
        refused = call(scene, "adam", "POST", f"/hosts/{name}/trust", json={"fingerprint": shown["fingerprint"]})
    assert refused.status_code == 409, refused.text
    assert f"not the confirmed {shown['fingerprint']}" in refused.json()["detail"]
    assert await pinned(name) == []
    with scene.catalog.session() as s:
        [event] = list_audit(s, action="api.host.trust", object_name=name, limit=1)
    assert event.outcome == "error" and "changed" in event.detail["error"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", f"/hosts/{ONE}/host-key", 422),  # a local host has no host key
    ("GET", "/hosts/no-such-host/host-key", 404),
    ("POST", "/hosts/no-such-host/check", 404),
    ("PUT", "/hosts/no-such-host/labels", 404),
])
def test_host_routes_refuse_clearly(scene, method, path, status):
    reply = call(scene, "adam", method, path, json={"labels": []} if method == "PUT" else None)
    assert reply.status_code == status and reply.json()["detail"], reply.text


async def test_labels_replace_the_hosts_labels(scene):
    reply = call(scene, "adam", "PUT", f"/hosts/{ONE}/labels", json={"labels": ["site=one", "prod-eu", "prod-eu"]})
    assert reply.status_code == 200 and reply.json()["labels"] == ["site=one", "prod-eu"], reply.text
    [info] = [h for h in await host_services.listing() if h.name == ONE]
    assert info.labels == ("site=one", "prod-eu") and info.admins_only is False


#: What each realm user's console may offer (their roles: docs/access.md).
EXPECTED_CAN = {
    "viola": {"script.read"},
    "otto": {"script.read", "run.start", "run.stop"},
    "paula": {"script.read", "run.start", "run.stop"},
    "anna": {"script.read", "script.add", "script.edit"},
    "adam": {"script.read", "script.add", "script.edit", "run.start", "run.stop", "host.add", "host.trust",
             "access.manage", "webhook.manage", "audit.read"},
}


@pytest.mark.parametrize("user", sorted(EXPECTED_CAN))
def test_my_permissions(scene, user):
    mine = call(scene, user, "GET", "/me/permissions").json()
    assert mine["username"] == user and mine["roles"]
    assert {name for name in EXPECTED_CAN["adam"] if mine["can"][name]} == EXPECTED_CAN[user]


def test_access_preview_shows_what_a_rule_leaves(scene):
    """An operator in a group that may start only on hosts labelled site=one."""
    query = {"user": "someone", "role": ["sms-operator"], "group": [TEAM]}
    with scene.catalog.session() as s:
        rule = rows.add_rule(s, created_by="setup", subject_kind="group", subject=TEAM,
                             actions=["start"], host_label="site=one")
    try:
        preview = call(scene, "adam", "GET", "/access/preview", params=query).json()
    finally:
        with scene.catalog.session() as s:
            rows.remove_rule(s, rule.id)
    actions = {entry["action"]: entry for entry in preview["actions"]}
    assert preview["roles"] == ["sms-operator"] and preview["can"]["run.start"] and not preview["can"]["script.add"]
    assert ONE in actions["start"]["hosts"] and TWO not in actions["start"]["hosts"]
    assert TWO in actions["stop"]["hosts"] and TWO in actions["read"]["hosts"]
    assert actions["author"] == {**actions["author"], "allowed": False, "scripts": [], "hosts": []}
    assert "'author' needs role" in actions["author"]["reason"]
    assert call(scene, "anna", "GET", "/access/preview", params=query).status_code == 403
