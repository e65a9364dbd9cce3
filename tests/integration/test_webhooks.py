"""Signed webhooks through the real gateway app, a real Prefect server and worker: a valid call
starts exactly one run with the mapped arguments; bad signature, stale timestamp, replay,
oversized body, rate limit and payloads outside the allow-list start none and get 4xx."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from blocks.hosts import LocalHost
from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import ScriptSpec, list_audit
from sms_plugin.catalog import access as rows
from sms_plugin.gateway.signing import MAX_BODY_BYTES, TOLERANCE_SECONDS, github_signature, sms_signature
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture
from tests.integration.loop_guard import catalog_off_loops  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("catalog_off_loops")]

HOST = f"gw-hook-host-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
async def script(gateway: Gateway) -> str:  # noqa: F811
    name = f"gw-hook-{uuid.uuid4().hex[:6]}"
    await host_services.add(HOST, LocalHost())
    spec = ScriptSpec(name=name, interpreter="sh", host=HOST)
    await script_services.add(gateway.catalog, spec, 'echo "ref=$1 by=$2"\n', author="setup")
    return name


def new_hook(gateway: Gateway, script: str, **settings) -> tuple[str, str]:  # noqa: F811
    """A webhook of ``script`` made through the API by adam; returns (id, secret)."""
    body = {"script": script, **settings}
    reply = httpx.post(f"{gateway.url}/api/v1/webhooks", json=body, headers=gateway.headers("adam"), timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], reply.json()["secret"]


def post(gateway: Gateway, hook_id: str, body: bytes, headers: dict[str, str]) -> httpx.Response:  # noqa: F811
    return httpx.post(f"{gateway.url}/hooks/{hook_id}", content=body, headers=headers, timeout=60)


def signed(secret: str, body: bytes, *, at: int | None = None, delivery: str | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "X-SMS-Timestamp": str(stamp),
        "X-SMS-Signature": sms_signature(secret, stamp, body),
        "X-SMS-Delivery": delivery or str(uuid.uuid4()),
    }


async def runs_of(hook_id: str) -> list:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"sms-trigger:webhook:{hook_id}"]))
        )


def outcomes(gateway: Gateway, hook_id: str) -> list[str]:  # noqa: F811
    """Outcomes of the stored deliveries (those with a valid signature), oldest first."""
    with gateway.catalog.session() as s:
        return [d.outcome for d in reversed(rows.list_deliveries(s, hook_id))]


def refused(gateway: Gateway, hook_id: str) -> dict[str, int]:  # noqa: F811
    """How many deliveries were refused before a valid signature was stored, per reason."""
    with gateway.catalog.session() as s:
        counts: dict[str, int] = {}
        for row in rows.list_refusals(s, hook_id):
            counts[row.reason] = counts.get(row.reason, 0) + row.count
        return counts


async def test_valid_signature_starts_exactly_one_run_with_mapped_arguments(gateway, script, prefect_worker):  # noqa: F811
    hook_id, secret = new_hook(
        gateway, script, arguments=[{"field": "ref"}, {"field": "pusher.name", "pattern": "[a-z]{1,20}"}]
    )
    body = json.dumps({"ref": "refs/heads/main", "pusher": {"name": "ada"}, "other": "ignored; rm -rf /"}).encode()
    reply = post(gateway, hook_id, body, signed(secret, body, delivery="d-1"))
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["run_id"]
    assert reply.json()["delivery_id"] == "d-1"
    assert [str(run.id) for run in await runs_of(hook_id)] == [run_id]
    result = await run_services.wait(gateway.catalog, run_id, timeout=120)
    assert result.state == "COMPLETED", result.message
    assert result.output_tail == ["stdout: ref=refs/heads/main by=ada"]
    with gateway.catalog.session() as s:
        [delivery] = rows.list_deliveries(s, hook_id)
        [event] = list_audit(s, actor=f"webhook:{hook_id}")
    assert (delivery.delivery_id, delivery.outcome, delivery.run_id, delivery.client) == ("d-1", "started", run_id, "127.0.0.1")
    assert (event.action, event.outcome, event.detail["run_id"]) == ("webhook.deliver", "ok", run_id)


async def test_github_style_signature_is_accepted_once(gateway, script):  # noqa: F811
    hook_id, secret = new_hook(gateway, script)
    body = b'{"zen": "Keep it logically awesome."}'
    headers = {"X-Hub-Signature-256": github_signature(secret, body), "X-GitHub-Delivery": "gh-1"}
    assert post(gateway, hook_id, body, headers).status_code == 202
    replay = post(gateway, hook_id, body, {**headers, "X-GitHub-Delivery": "gh-2"})
    assert replay.status_code == 409 and "replay" in replay.json()["detail"]
    assert len(await runs_of(hook_id)) == 1
    assert outcomes(gateway, hook_id) == ["started"]
    assert refused(gateway, hook_id) == {"replayed": 1}


async def test_refused_deliveries_start_nothing(gateway, script):  # noqa: F811
    hook_id, secret = new_hook(gateway, script, arguments=[{"field": "ref", "pattern": "[a-z/]+"}])
    body = b'{"ref": "refs/heads/main"}'
    good = signed(secret, body)
    cases = [
        ("bad signature", body, signed("not-the-secret", body), 401, "does not match"),
        ("tampered body", b'{"ref": "refs/heads/evil"}', good, 401, "does not match"),
        ("stale timestamp", body, signed(secret, body, at=int(time.time()) - TOLERANCE_SECONDS - 5), 401, "tolerance"),
        ("future timestamp", body, signed(secret, body, at=int(time.time()) + TOLERANCE_SECONDS + 5), 401, "tolerance"),
        ("unsigned", body, {"Content-Type": "application/json"}, 401, "unsigned"),
        ("oversized", b"x" * (MAX_BODY_BYTES + 1), signed(secret, b"x" * (MAX_BODY_BYTES + 1)), 413, "exceeds"),
        ("not in the allow-list", b'{"ref": "main; rm -rf /"}', signed(secret, b'{"ref": "main; rm -rf /"}'), 422,
         "allowed pattern"),
        ("field missing", b'{"branch": "main"}', signed(secret, b'{"branch": "main"}'), 422, "no field 'ref'"),
        ("not JSON", b"ref=main", signed(secret, b"ref=main"), 422, "not JSON"),
    ]
    for label, payload, headers, status, message in cases:
        reply = post(gateway, hook_id, payload, headers)
        assert (reply.status_code, message in reply.json()["detail"]) == (status, True), f"{label}: {reply.text}"
    assert await runs_of(hook_id) == []
    assert post(gateway, hook_id, body, good).status_code == 202
    replay = post(gateway, hook_id, body, {**good, "X-SMS-Delivery": "another-id"})
    assert replay.status_code == 409
    assert len(await runs_of(hook_id)) == 1
    assert outcomes(gateway, hook_id) == ["invalid-payload", "invalid-payload", "invalid-payload", "started"]
    assert refused(gateway, hook_id) == {"bad-signature": 5, "too-large": 1, "replayed": 1}
    with gateway.catalog.session() as s:
        denied = list_audit(s, actor=f"webhook:{hook_id}", outcome="denied")
    assert len(denied) == 7  # the six signature/size refusals and the replay; invalid payloads are "error"


async def test_rate_limit_per_hook(gateway, script):  # noqa: F811
    hook_id, secret = new_hook(gateway, script, max_per_minute=2)
    statuses = []
    for n in range(3):
        body = json.dumps({"n": n}).encode()
        statuses.append(post(gateway, hook_id, body, signed(secret, body)).status_code)
    assert statuses == [202, 202, 429]
    assert len(await runs_of(hook_id)) == 2


async def test_unknown_disabled_and_rotated_hooks(gateway, script):  # noqa: F811
    body = b"{}"
    assert post(gateway, "wh_0123456789abcdef", body, signed("x", body)).status_code == 404
    hook_id, secret = new_hook(gateway, script, enabled=False)
    assert post(gateway, hook_id, body, signed(secret, body)).status_code == 404
    adam = gateway.headers("adam")
    httpx.put(f"{gateway.url}/api/v1/webhooks/{hook_id}", json={"enabled": True}, headers=adam, timeout=60)
    rotated = httpx.post(f"{gateway.url}/api/v1/webhooks/{hook_id}/secret", headers=adam, timeout=60).json()["secret"]
    assert post(gateway, hook_id, body, signed(secret, body)).status_code == 401
    assert post(gateway, hook_id, body, signed(rotated, body)).status_code == 202
    deliveries = httpx.get(f"{gateway.url}/api/v1/webhooks/{hook_id}/deliveries", headers=adam, timeout=60).json()
    assert [d["outcome"] for d in deliveries] == ["started"]
    counts = httpx.get(f"{gateway.url}/api/v1/webhooks/{hook_id}/refusals", headers=adam, timeout=60).json()
    assert {(c["reason"], c["count"]) for c in counts} == {("bad-signature", 1), ("disabled", 1)}


async def test_secrets_are_sealed_in_the_catalog(gateway, script):  # noqa: F811
    hook_id, secret = new_hook(gateway, script)
    with gateway.catalog.session() as s:
        stored = rows.get_webhook(s, hook_id).secret
    assert secret not in stored and len(stored) > len(secret)


async def test_payload_fields_map_to_declared_parameters_and_are_checked_against_them(gateway, script):  # noqa: F811
    name = f"gw-hook-params-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", "sms-webhook-params-idle")  # no worker: the run stays Scheduled
        spec = ScriptSpec.parse({"name": name, "interpreter": "sh", "host": HOST,
                                 "parameters": [{"name": "ref"}, {"name": "count", "type": "integer"}]})
        await script_services.add(gateway.catalog, spec, 'echo "$@"\n', author="setup")
    hook_id, secret = new_hook(gateway, name, arguments=[{"field": "ref", "parameter": "ref"},
                                                         {"field": "n", "parameter": "count"}])
    good = json.dumps({"ref": "main", "n": 3}).encode()
    bad = json.dumps({"ref": "main", "n": "three"}).encode()
    accepted = post(gateway, hook_id, good, signed(secret, good))
    refused = post(gateway, hook_id, bad, signed(secret, bad))
    assert accepted.status_code == 202, accepted.text
    assert refused.status_code == 422 and "parameter 'count'" in refused.json()["detail"], refused.text
    started = await runs_of(hook_id)
    assert [run.parameters.get("parameters") for run in started] == [{"ref": "main", "count": 3}]
    assert outcomes(gateway, hook_id) == ["started", "invalid-payload"]
