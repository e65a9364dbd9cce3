"""Prefect behind the gateway (real Keycloak, real Prefect under /prefect with an auth string):
reads for viewers, changes for admins, runs started and cancelled as the deployment's script and
host allow, websockets authenticated at the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import websockets

from sms_plugin.catalog import Catalog, list_audit
from tests.integration.conftest import wait_for_metric

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def bearer(keycloak, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keycloak.token(user)}"}


@pytest.fixture(scope="module")
def as_user(gateway_bed, keycloak):
    """``as_user("viola")``: an HTTP client on the gateway with viola's bearer token."""
    clients: dict[str, httpx.Client] = {}

    def client(user: str) -> httpx.Client:
        if user not in clients:
            clients[user] = httpx.Client(base_url=gateway_bed.url, headers=bearer(keycloak, user), timeout=30)
        return clients[user]

    yield client
    for opened in clients.values():
        opened.close()


def test_prefect_itself_refuses_callers_without_its_auth_string(gateway_bed) -> None:
    assert httpx.post(f"{gateway_bed.prefect.api_url}/flows/filter", json={}, timeout=10).status_code == 401


def test_viewer_reads_the_prefect_ui_and_api(as_user, gateway_bed) -> None:
    viewer = as_user("viola")
    index = viewer.get("/prefect/")
    assert index.status_code == 200 and "<html" in index.text.lower()
    settings = viewer.get("/prefect/ui-settings").json()
    assert settings["api_url"] == f"{gateway_bed.url}/prefect/api"
    assert settings["auth"] is None  # the UI does not ask for Prefect's basic auth: the gateway did
    assert viewer.post("/prefect/api/flows/filter", json={}).status_code == 200
    assert viewer.post("/prefect/api/flow_runs/count", json={}).status_code == 200
    assert viewer.get("/prefect/api/admin/version").status_code == 200


def test_without_a_login_the_proxy_answers_401(gateway_bed) -> None:
    reply = httpx.post(f"{gateway_bed.url}/prefect/api/flows/filter", json={}, timeout=10)
    assert reply.status_code == 401
    assert httpx.get(f"{gateway_bed.url}/prefect/", timeout=10).status_code == 401


NO_DEPLOYMENT = "8d2b6f40-1c3e-4a57-b9d8-2e4f6a8c0b13"
"""No deployment has this id (a fixed one: ``-n 2`` needs the same test ids in both processes)."""


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/prefect/api/variables/", {"name": "viewer_var", "value": "1"}),
        ("POST", "/prefect/api/flows/", {"name": "viewer-flow"}),
        ("POST", "/prefect/api/automations/", {"name": "a"}),
        ("POST", "/prefect/api/block_documents/", {}),
        ("POST", "/prefect/api/events", []),
        ("DELETE", f"/prefect/api/deployments/{NO_DEPLOYMENT}", None),
        ("PATCH", f"/prefect/api/deployments/{NO_DEPLOYMENT}", {}),
    ],
)
def test_viewer_and_operator_cannot_change_prefect(as_user, method, path, body) -> None:
    for user in ("viola", "otto", "anna"):
        reply = as_user(user).request(method, path, json=body)
        assert reply.status_code == 403, (user, method, path, reply.text)
        assert "needs role sms-admin" in reply.json()["detail"]


def test_block_documents_and_their_secrets_are_for_admins_only(as_user) -> None:
    for query in ({"include_secrets": "true"}, {}):
        assert as_user("otto").post("/prefect/api/block_documents/filter", params=query, json={}).status_code == 403
    assert as_user("adam").post("/prefect/api/block_documents/filter", params={"include_secrets": "true"}, json={}).status_code == 200
    assert as_user("otto").post("/prefect/api/block_documents/count", json={}).status_code == 200


@pytest.fixture(scope="module")
def deployment(as_user) -> str:
    """A run-script deployment of script ``pay-report`` on host ``eu-1``, created by the admin."""
    admin = as_user("adam")
    flow = admin.post("/prefect/api/flows/", json={"name": "run-script"})
    assert flow.status_code in (200, 201), flow.text
    created = admin.post(
        "/prefect/api/deployments/",
        json={
            "name": f"pay-report-{uuid.uuid4().hex[:6]}",
            "flow_id": flow.json()["id"],
            "parameters": {"script": "pay-report"},
            "tags": ["payments", "host:eu-1", "sms"],
        },
    )
    assert created.status_code in (200, 201), created.text
    return str(created.json()["id"])


def test_operator_starts_and_cancels_a_run_viewer_may_not(as_user, deployment) -> None:
    viewer, operator = as_user("viola"), as_user("otto")
    denied = viewer.post(f"/prefect/api/deployments/{deployment}/create_flow_run", json={})
    assert denied.status_code == 403
    assert "'start' needs role" in denied.json()["detail"]
    run = operator.post(f"/prefect/api/deployments/{deployment}/create_flow_run", json={})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    cancel = {"state": {"type": "CANCELLING"}, "force": True}
    assert viewer.post(f"/prefect/api/flow_runs/{run_id}/set_state", json=cancel).status_code == 403
    done = operator.post(f"/prefect/api/flow_runs/{run_id}/set_state", json=cancel)
    assert done.status_code in (200, 201), done.text
    assert operator.get(f"/prefect/api/flow_runs/{run_id}").json()["state"]["type"] in ("CANCELLING", "CANCELLED")
    # Any other state change of a run stays with the admins.
    running = operator.post(f"/prefect/api/flow_runs/{run_id}/set_state", json={"state": {"type": "RUNNING"}})
    assert running.status_code == 403
    # Each start, stop and denial is in the audit trail, with who, what, where from and why.
    catalog = Catalog()
    try:
        with catalog.session() as session:
            started = list_audit(session, action="prefect.start", limit=1000)
            stopped = list_audit(session, action="prefect.stop", limit=1000)
    finally:
        catalog.dispose()
    create_path = f"/prefect/api/deployments/{deployment}/create_flow_run"
    assert {(e.actor, e.outcome) for e in started if e.object_name == create_path} == {("viola", "denied"), ("otto", "ok")}
    ok = next(e for e in started if e.object_name == create_path and e.outcome == "ok")
    assert ok.detail == {"method": "POST", "script": "pay-report", "host": "eu-1", "status": 201}
    assert ok.client == "127.0.0.1" and ok.subject
    denied = next(e for e in stopped if e.actor == "viola" and run_id in e.object_name)
    assert denied.outcome == "denied" and "'stop' needs role" in denied.detail["reason"]


def test_unknown_deployment_is_a_404_not_a_500(as_user) -> None:
    reply = as_user("otto").post(f"/prefect/api/deployments/{uuid.uuid4()}/create_flow_run", json={})
    assert reply.status_code == 404


# ------------------------------------------------------------------ websockets


def _ws_url(gateway_bed, path: str) -> str:
    return gateway_bed.url.replace("http://", "ws://") + path


async def _subscribe(socket, event_prefix: str) -> None:
    await socket.send(json.dumps({"type": "auth", "token": None}))
    assert json.loads(await socket.recv()) == {"type": "auth_success"}
    await socket.send(json.dumps({
        "type": "filter", "backfill": False,
        "filter": {"event": {"prefix": [event_prefix]}, "occurred": {"since": datetime.now(timezone.utc).isoformat(), "until": "2100-01-01T00:00:00Z"}},
    }))


async def test_websocket_events_reach_an_authenticated_viewer(gateway_bed, keycloak, as_user) -> None:
    name = f"sms.test.{uuid.uuid4().hex[:8]}"
    async with websockets.connect(
        _ws_url(gateway_bed, "/prefect/api/events/out"),
        subprotocols=[websockets.Subprotocol("prefect")],
        additional_headers=bearer(keycloak, "viola"),
        open_timeout=30,
    ) as socket:
        await _subscribe(socket, name)
        await asyncio.sleep(1)  # the server subscribes before it reads on
        event = {
            "id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(), "event": name,
            "resource": {"prefect.resource.id": "sms.test"}, "payload": {"n": 1},
        }
        emitted = await asyncio.to_thread(as_user("adam").post, "/prefect/api/events", json=[event])
        assert emitted.status_code == 204, emitted.text
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout=30))
    assert message["type"] == "event" and message["event"]["event"] == name
    assert message["event"]["id"] == event["id"]


async def test_prefect_clients_may_authenticate_with_the_first_message(gateway_bed, keycloak) -> None:
    """A Prefect client (PREFECT_API_KEY = an access token) sends its token in the auth message."""
    async with websockets.connect(
        _ws_url(gateway_bed, "/prefect/api/logs/out"), subprotocols=[websockets.Subprotocol("prefect")], open_timeout=30
    ) as socket:
        await socket.send(json.dumps({"type": "auth", "token": keycloak.token("viola")}))
        assert json.loads(await socket.recv()) == {"type": "auth_success"}


async def test_websocket_without_credentials_is_refused(gateway_bed) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(_ws_url(gateway_bed, "/prefect/api/events/out"), open_timeout=30):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(
        _ws_url(gateway_bed, "/prefect/api/events/out"), subprotocols=[websockets.Subprotocol("prefect")], open_timeout=30
    ) as socket:
        await socket.send(json.dumps({"type": "auth", "token": "not-a-token"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_viewer_may_not_open_the_event_intake_socket(gateway_bed, keycloak) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            _ws_url(gateway_bed, "/prefect/api/events/in"), additional_headers=bearer(keycloak, "viola"), open_timeout=30
        ):
            pass
    assert refused.value.response.status_code == 403


def test_sms_up_puts_prefect_behind_the_gateway(keycloak, tmp_path) -> None:
    """`sms up` with SMS_OIDC_ISSUER: Prefect under /prefect behind an auth string, the gateway in
    front, a worker that still gets runs; Ctrl-C stops all three."""
    from infra.testbed.ports import free_port

    port, gateway_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMS_"))}
    env.update(
        SMS_HOME=str(tmp_path / "home"), PREFECT_WORKER_QUERY_SECONDS="1", SMS_OIDC_ISSUER=keycloak.issuer,
        SMS_OIDC_CLIENT_SECRET="sms-gateway-secret", SMS_GATEWAY_PORT=str(gateway_port),
        SMS_EXPORTER_PORT=str(metrics_port),
    )
    sms = str(Path(sys.executable).with_name("sms"))
    up = subprocess.Popen([sms, "up", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    try:
        assert up.stdout is not None
        seen = ""
        deadline = time.monotonic() + 180
        while "SMS is up" not in seen and time.monotonic() < deadline and up.poll() is None:
            seen += up.stdout.readline()
        assert "SMS is up" in seen and gateway_url in seen, seen
        direct = httpx.post(f"http://127.0.0.1:{port}/prefect/api/deployments/filter", json={}, timeout=10)
        assert direct.status_code == 401  # Prefect itself wants the auth string
        ready = _wait_ready(gateway_url)
        assert ready == {"ready": True, "checks": {"keycloak": "ok", "prefect": "ok"}}
        operator = {"Authorization": f"Bearer {keycloak.token('otto')}"}
        admin = {"Authorization": f"Bearer {keycloak.token('adam')}"}
        deployments = httpx.post(f"{gateway_url}/prefect/api/deployments/filter", json={}, headers=operator, timeout=30)
        hello = next(d for d in deployments.json() if d["name"] == "hello-bash")
        start = f"{gateway_url}/prefect/api/deployments/{hello['id']}/create_flow_run"
        # The samples run on host local, the worker's own machine: admins only.
        refused = _retrying_503(lambda: httpx.post(start, json={}, headers=operator, timeout=30))
        assert refused.status_code == 403 and "worker's own machine" in refused.text, refused.text
        runs = httpx.post(f"{gateway_url}/prefect/api/flow_runs/filter", json={}, headers=admin, timeout=30).json()
        assert not [r for r in runs if r["deployment_id"] == hello["id"]]  # nothing was started
        run = _retrying_503(lambda: httpx.post(start, json={}, headers=admin, timeout=30))
        assert run.status_code == 201, run.text
        state = ""
        deadline = time.monotonic() + 120
        while state not in ("COMPLETED", "FAILED", "CRASHED") and time.monotonic() < deadline:
            time.sleep(1)
            state = httpx.get(f"{gateway_url}/prefect/api/flow_runs/{run.json()['id']}", headers=operator,
                              timeout=30).json()["state"]["type"]
        assert state == "COMPLETED"
        processes = subprocess.run(["pgrep", "-a", "-P", str(up.pid)], capture_output=True, text=True).stdout.splitlines()
        children = [line.split(" ", 1)[0] for line in processes]
        assert len(children) == 4  # Prefect server, worker, metrics exporter, gateway
        assert not any(line.endswith("sms events") for line in processes)  # no SMS_KAFKA_BOOTSTRAP: no publisher
        # The exporter reaches Prefect behind its auth string too: it counts the run.
        wait_for_metric(metrics_port, 'sms_script_runs_total{host="local",script="hello-bash",state="completed"} 1.0', 60)
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    left = subprocess.run(["pgrep", "-s", ",".join([str(up.pid), *children])], capture_output=True, text=True)
    assert left.stdout.split() == []


def _retrying_503(send) -> httpx.Response:
    """As Prefect's own client does: retry a 503 (Prefect's SQLite busy on a loaded machine)."""
    for _ in range(5):
        reply = send()
        if reply.status_code != 503:
            return reply
        time.sleep(2)
    return reply


def _wait_ready(url: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = httpx.get(f"{url}/readyz", timeout=5)
            if reply.status_code == 200 or time.monotonic() > deadline:
                return reply.json()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
