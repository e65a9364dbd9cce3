"""Reads through the proxy: a caller whose ``read`` is narrowed by an access rule gets no run
data from Prefect's API (HTTP or websockets) and is told where to look; everyone else reads.
Also what the proxy's answers look like: login redirect for browsers, headers, encodings."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
import websockets

pytestmark = pytest.mark.integration

RUN_DATA = [
    ("POST", "/prefect/api/flow_runs/filter", {}),
    ("POST", "/prefect/api/logs/filter", {}),
    ("POST", "/prefect/api/deployments/filter", {}),
    ("POST", "/prefect/api/artifacts/filter", {}),
    ("POST", "/prefect/api/events/filter", {}),
    ("POST", "/prefect/api/task_runs/filter", {}),
    ("POST", "/prefect/api/ui/flow_runs/count-task-runs", {"flow_run_ids": []}),
    ("POST", "/prefect/api/variables/filter", {}),
]


@pytest.fixture(scope="module")
def narrowed(bed):
    """An access rule narrowing paula's (operator) reads to scripts named pay-*; removed after."""
    admin = bed.client("adam")
    rule = admin.post("/api/v1/access-rules", json={
        "subject_kind": "user", "subject": "paula", "actions": ["read"], "script_glob": "pay-*",
        "description": "attack tests: paula reads pay-* only"})
    assert rule.status_code in (200, 201), rule.text
    yield "paula"
    admin.delete(f"/api/v1/access-rules/{rule.json()['id']}")


@pytest.mark.parametrize(("method", "path", "body"), RUN_DATA)
def test_narrowed_reader_gets_no_run_data_from_prefect(bed, narrowed, method: str, path: str, body) -> None:
    reply = bed.client(narrowed).request(method, path, json=body)
    assert reply.status_code == 403, reply.text
    assert "/api/v1" in reply.json()["detail"] and "narrowed" in reply.json()["detail"]
    # Not narrowed: the same read reaches Prefect for the viewer.
    assert bed.client("viola").request(method, path, json=body).status_code == 200, path


def test_narrowed_reader_gets_no_single_run_either(bed, narrowed, deployment) -> None:
    run = bed.client("otto").post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run", json={}).json()
    for path in (f"/prefect/api/flow_runs/{run['id']}", f"/prefect/api/deployments/{deployment['id']}",
                 f"/prefect/api/flow_runs/{run['id']}/logs/download"):
        assert bed.client(narrowed).get(path).status_code == 403, path


def test_narrowed_reader_still_gets_the_ui_and_prefects_own_description(bed, narrowed) -> None:
    client = bed.client(narrowed)
    assert client.get("/prefect/").status_code == 200
    assert client.get("/prefect/api/health").status_code == 200
    assert client.get("/prefect/api/admin/version").status_code == 200
    assert client.post("/prefect/api/block_types/filter", json={}).status_code == 200
    # ... and the SMS REST API, which filters per script.
    assert client.get("/api/v1/runs").status_code == 200


@pytest.mark.parametrize("path", ["/prefect/api/logs/out", "/prefect/api/events/out"])
async def test_narrowed_reader_gets_no_stream(bed, narrowed, path: str) -> None:
    url = bed.url.replace("http://", "ws://") + path
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers=bed.bearer(narrowed), open_timeout=30):
            pass
    assert refused.value.response.status_code == 403
    # A Prefect client authenticating by its first message is closed with the reason.
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("prefect")], open_timeout=30) as socket:
        await socket.send(json.dumps({"type": "auth", "token": bed.token(narrowed)}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "narrowed" in closed.value.rcvd.reason


# ------------------------------------------------------------------ roles x routes, a sample

SAMPLE = [  # (method, path, body, {user: allowed?})
    ("POST", "/prefect/api/flows/filter", {}, {"viola": True, "otto": True, "anna": True, "adam": True}),
    ("GET", "/prefect/api/health", None, {"viola": True, "otto": True, "anna": True, "adam": True}),
    ("POST", "/prefect/api/variables/", {"name": "matrix_var", "value": "1"},
     {"viola": False, "otto": False, "anna": False, "adam": True}),
    ("GET", "/prefect/api/admin/settings", None, {"viola": False, "otto": False, "anna": False, "adam": True}),
    ("POST", "/prefect/api/work_pools/sms/get_scheduled_flow_runs", {},
     {"viola": False, "otto": False, "anna": False, "adam": True}),
]


def test_roles_by_routes_sample_through_the_gateway(bed) -> None:
    for method, path, body, allowed in SAMPLE:
        for user, may in allowed.items():
            reply = bed.client(user).request(method, path, json=body)
            assert (reply.status_code != 403) == may, (user, method, path, reply.status_code, reply.text)
    bed.prefect.delete("/variables/name/matrix_var")


# ------------------------------------------------------------------ answers


def test_a_browser_without_a_session_is_sent_to_the_login_page(bed) -> None:
    page = httpx.get(f"{bed.url}/prefect/runs", headers={"Accept": "text/html,application/xhtml+xml"}, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/auth/login?next=/prefect/runs"
    api = httpx.post(f"{bed.url}/prefect/api/flows/filter", json={}, headers={"Accept": "text/html"}, timeout=30)
    assert api.status_code == 401 and "detail" in api.json()
    assert httpx.get(f"{bed.url}/prefect/", timeout=30).status_code == 401  # not a browser: JSON 401


def test_answers_carry_one_date_and_server_and_the_encoding_asked_for(bed) -> None:
    plain = bed.raw("viola", "GET", b"/prefect/api/openapi.json")
    assert plain.status == 200
    assert len(plain.header("date")) == 1 and len(plain.header("server")) <= 1
    assert plain.header("content-encoding") == []
    assert json.loads(plain.body)["openapi"]
    zipped = bed.raw("viola", "GET", b"/prefect/api/openapi.json", **{"Accept-Encoding": "gzip"})
    assert zipped.header("content-encoding") == ["gzip"]
    assert json.loads(gzip.decompress(zipped.body))["openapi"]
