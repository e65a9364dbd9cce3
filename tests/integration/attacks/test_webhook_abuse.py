"""Webhook abuse through the real gateway app (real Keycloak tokens, real Prefect server): timestamps
in non-ASCII digits, a flood of 1,000 bad deliveries, and arguments shaped as options or paths.
Each is refused with a 4xx (never a 500), starts nothing, and is recorded — in a bounded number
of catalog rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from sqlalchemy import func, select

from blocks.hosts import LocalHost
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, ScriptSpec, list_audit
from sms_plugin.catalog import access as rows
from sms_plugin.catalog.models import WebhookDelivery, WebhookRefusal
from sms_plugin.gateway.refusals import ADDRESS_LIMIT
from sms_plugin.gateway.signing import sms_signature
from tests.integration.gateway_fixtures import Gateway, serve

pytestmark = pytest.mark.integration

IDLE_POOL = "sms-gateway-idle"  # no worker serves it: an admitted run stays Scheduled


@pytest.fixture(scope="module")
def abuse_gateway(keycloak, prefect_server) -> Iterator[Gateway]:
    """A gateway app of its own: its per-address refusal counts do not touch other tests'."""
    catalog = Catalog()
    catalog.upgrade()
    with serve(keycloak, catalog) as served:
        yield served
    catalog.dispose()


@pytest.fixture(scope="module")
async def script(abuse_gateway: Gateway) -> str:
    name, host = f"abuse-{uuid.uuid4().hex[:6]}", f"abuse-host-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        await host_services.add(host, LocalHost())
        await script_services.add(abuse_gateway.catalog, ScriptSpec(name=name, interpreter="sh", host=host),
                                  'echo "$1"\n', author="setup")
    return name


def new_hook(gateway: Gateway, script: str, **settings) -> tuple[str, str]:
    reply = httpx.post(f"{gateway.url}/api/v1/webhooks", json={"script": script, **settings},
                       headers=gateway.headers("adam"), timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], reply.json()["secret"]


def signed(secret: str, body: bytes) -> dict[str, str]:
    stamp = int(time.time())
    return {"Content-Type": "application/json", "X-SMS-Timestamp": str(stamp),
            "X-SMS-Signature": sms_signature(secret, stamp, body)}


async def runs_of(hook_id: str) -> int:
    async with get_client() as client:
        return len(await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"sms-trigger:webhook:{hook_id}"]))
        ))


def refusal_rows(gateway: Gateway, hook_id: str) -> list[WebhookRefusal]:
    with gateway.catalog.session() as s:
        return rows.list_refusals(s, hook_id, limit=1000)


def counted(gateway: Gateway, hook_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in refusal_rows(gateway, hook_id):
        counts[row.reason] = counts.get(row.reason, 0) + row.count
    return counts


def deliveries(gateway: Gateway, hook_id: str) -> int:
    with gateway.catalog.session() as s:
        return int(s.scalar(select(func.count()).where(WebhookDelivery.webhook_id == hook_id)) or 0)


def audited(gateway: Gateway, hook_id: str) -> int:
    with gateway.catalog.session() as s:
        return len(list_audit(s, actor=f"webhook:{hook_id}", limit=10_000))


#: X-SMS-Timestamp values whose digits are not ASCII, as the bytes a client sends.
NON_ASCII_STAMPS = {
    "arabic-indic": "١٧٦٤٥٤٦٠٠٠".encode(),
    "fullwidth": "１７６４５４６０００".encode(),
    "superscript (latin-1 bytes, str.isdigit() is true)": "¹²³".encode("latin-1"),
    "ascii then superscript": str(int(time.time())).encode() + "²".encode("latin-1"),
}


async def test_non_ascii_digit_timestamps_are_refused(abuse_gateway, script):
    hook_id, secret = new_hook(abuse_gateway, script)
    body = b"{}"
    with httpx.Client(base_url=abuse_gateway.url, timeout=60) as client:
        for label, stamp in NON_ASCII_STAMPS.items():
            headers = {b"content-type": b"application/json", b"x-sms-timestamp": stamp,
                       b"x-sms-signature": sms_signature(secret, 0, body).encode()}
            reply = client.post(f"/hooks/{hook_id}", content=body, headers=headers)
            assert reply.status_code == 401, f"{label}: {reply.status_code} {reply.text}"
            assert "ASCII digits" in reply.json()["detail"], label
    assert await runs_of(hook_id) == 0 and deliveries(abuse_gateway, hook_id) == 0
    assert counted(abuse_gateway, hook_id) == {"bad-signature": len(NON_ASCII_STAMPS)}
    assert audited(abuse_gateway, hook_id) == len(NON_ASCII_STAMPS)


FLOOD = 1_000


async def test_a_flood_of_bad_deliveries_is_limited_and_stored_bounded(abuse_gateway, script):
    hook_limit = 5
    hook_id, secret = new_hook(abuse_gateway, script, max_per_minute=hook_limit)
    statuses: list[int] = []
    details: list[str] = []
    with httpx.Client(base_url=abuse_gateway.url, timeout=60) as client:
        for n in range(FLOOD):
            stamp = str(int(time.time())) if n % 2 else ""  # half unsigned, half badly signed
            headers = {"Content-Type": "application/json"}
            if stamp:
                headers.update({"X-SMS-Timestamp": stamp, "X-SMS-Signature": "sha256=" + "0" * 64})
            reply = client.post(f"/hooks/{hook_id}", content=b'{"n": %d}' % n, headers=headers)
            statuses.append(reply.status_code)
            details.append(reply.json()["detail"])
    assert statuses[:hook_limit] == [401] * hook_limit
    assert set(statuses[hook_limit:]) == {429}, sorted(set(statuses))
    assert f"webhook {hook_id} refused {hook_limit}" in details[hook_limit]
    assert f"refused {ADDRESS_LIMIT} deliveries" in details[-1] and "127.0.0.1" in details[-1]

    # Nothing ran, nothing but a few counters grew: every refusal is counted, in ≤ 2 rows per reason.
    assert await runs_of(hook_id) == 0 and deliveries(abuse_gateway, hook_id) == 0
    assert counted(abuse_gateway, hook_id) == {"bad-signature": hook_limit, "rate-limited": FLOOD - hook_limit}
    assert len(refusal_rows(abuse_gateway, hook_id)) <= 4  # 2 reasons, an hour may turn meanwhile
    assert audited(abuse_gateway, hook_id) == hook_limit  # the flood is counted, not audited one by one

    # The address is held back whatever it sends; a valid delivery from elsewhere still starts its run.
    body = b"{}"
    with httpx.Client(base_url=abuse_gateway.url, timeout=60) as client:
        assert client.post(f"/hooks/{hook_id}", content=body, headers=signed(secret, body)).status_code == 429
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=abuse_gateway.url, timeout=60, transport=other) as client:
        assert client.post(f"/hooks/{hook_id}", content=body, headers=signed(secret, body)).status_code == 202
        bad = client.post(f"/hooks/{hook_id}", content=body, headers={"Content-Type": "application/json"})
        assert bad.status_code == 429 and f"webhook {hook_id}" in bad.json()["detail"]
    assert await runs_of(hook_id) == 1


@pytest.mark.parametrize("value", ["-rf", "--help", "../x", "a/../../etc/passwd", "..", "x y", "a;b", "$(id)"])
async def test_the_default_pattern_refuses_options_and_parent_paths(abuse_gateway, script, value):
    hook_id, secret = new_hook(abuse_gateway, script, arguments=[{"field": "ref"}])
    body = httpx.Request("POST", "/", json={"ref": value}).content
    other = httpx.HTTPTransport(local_address="127.0.0.3")  # the flood test's address is held back
    with httpx.Client(base_url=abuse_gateway.url, timeout=60, transport=other) as client:
        reply = client.post(f"/hooks/{hook_id}", content=body, headers=signed(secret, body))
        assert reply.status_code == 422 and "allowed pattern" in reply.json()["detail"], reply.text
        fine = httpx.Request("POST", "/", json={"ref": "refs/heads/v1.2"}).content
        assert client.post(f"/hooks/{hook_id}", content=fine, headers=signed(secret, fine)).status_code == 202
    assert await runs_of(hook_id) == 1  # only the well-formed delivery
    with abuse_gateway.catalog.session() as s:
        outcomes = sorted(d.outcome for d in rows.list_deliveries(s, hook_id))
    assert outcomes == ["invalid-payload", "started"]
