"""Bodies a non-admin may not send: secrets asked for anywhere, run starts that would change
what is executed, state changes other than cancel and retry, over-large bodies. Each is refused
(naming the field) and nothing happens in Prefect; no secret value ever reaches the caller."""

from __future__ import annotations

import json
import time
import uuid

import pytest

pytestmark = pytest.mark.integration

SECRET = f"hunter2-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def secret_block(bed) -> dict:
    """A block document holding the password SECRET in a secret field, created in Prefect."""
    slug = f"sms-test-cred-{uuid.uuid4().hex[:6]}"
    block_type = bed.prefect.post("/block_types/", json={"name": slug, "slug": slug}).raise_for_status().json()
    schema = bed.prefect.post("/block_schemas/", json={
        "block_type_id": block_type["id"], "capabilities": [],
        "fields": {"title": slug, "type": "object", "secret_fields": ["password"], "block_schema_references": {},
                   "properties": {"password": {"title": "Password", "type": "string", "format": "password",
                                               "writeOnly": True}}},
    }).raise_for_status().json()
    document = bed.prefect.post("/block_documents/", json={
        "name": "cred", "block_schema_id": schema["id"], "block_type_id": block_type["id"],
        "data": {"password": SECRET},
    }).raise_for_status().json()
    return {"id": document["id"], "slug": slug}


def _no_secret(reply) -> None:
    assert SECRET not in reply.text


@pytest.mark.parametrize("user", ["viola", "otto", "anna"])
def test_include_secrets_is_refused_in_every_place_and_spelling(bed, secret_block, user: str) -> None:
    client = bed.client(user)
    doc, slug = secret_block["id"], secret_block["slug"]
    attempts = [
        ("POST", "/prefect/api/block_documents/filter", None, {"include_secrets": True}),
        ("POST", "/prefect/api/block_documents/filter", None, {"include_secrets": "true"}),
        ("POST", "/prefect/api/block_documents/filter", None, {"include_secrets": 1}),
        ("POST", "/prefect/api/block_documents/filter", None, {"Include_Secrets": True}),
        ("POST", "/prefect/api/block_documents/filter", None, {"include_secrets": False, "x": {"include_secrets": True}}),
        ("POST", "/prefect/api/block_documents/filter", {"include_secrets": "true"}, {}),
        ("POST", "/prefect/api/block_documents/filter", {"INCLUDE_SECRETS": "1"}, {}),
        ("POST", "/prefect/api/block_documents/count", None, {"include_secrets": True}),
        ("GET", f"/prefect/api/block_documents/{doc}", {"include_secrets": "true"}, None),
        ("GET", f"/prefect/api/block_documents/{doc}", {"include_secrets": "yes"}, None),
        ("GET", f"/prefect/api/block_types/slug/{slug}/block_documents", {"include_secrets": "on"}, None),
        ("GET", f"/prefect/api/block_types/slug/{slug}/block_documents/name/cred", {"include_secrets": "t"}, None),
    ]
    for method, path, query, body in attempts:
        reply = client.request(method, path, params=query, json=body)
        assert reply.status_code == 403, (user, method, path, query, body, reply.text)
        detail = reply.json()["detail"]
        assert "include_secrets" in detail or "needs role sms-admin" in detail, detail
        _no_secret(reply)
    # Encoded in the query (include%5Fsecrets) is the same name to Prefect, so the same refusal.
    reply = bed.raw(user, "GET", f"/prefect/api/block_documents/{doc}?include%5Fsecrets=true".encode())
    assert reply.status == 403 and SECRET.encode() not in reply.body
    # Without the flag too: block documents are for admins (Prefect does not mask every secret).
    for reply in (client.post("/prefect/api/block_documents/filter", json={"include_secrets": False}),
                  client.get(f"/prefect/api/block_documents/{doc}"),
                  client.get(f"/prefect/api/block_types/slug/{slug}/block_documents")):
        assert reply.status_code == 403 and "needs role sms-admin" in reply.json()["detail"], reply.text
        _no_secret(reply)
    assert client.post("/prefect/api/block_documents/count", json={}).json() >= 1  # counting is a read


def test_a_secret_block_holding_a_json_object_stays_behind_the_gateway(bed) -> None:
    """Prefect masks a Secret block's value only when it is not a JSON object: read directly, such a
    block gives its password out without include_secrets. Through the gateway nobody but an admin
    reads block documents, so the value stays behind it."""
    from prefect.blocks.system import Secret

    schema = Secret._to_block_schema()
    block_type = bed.prefect.get("/block_types/slug/secret").raise_for_status().json()
    schema_id = bed.prefect.post("/block_schemas/filter", json={
        "block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}).raise_for_status().json()[0]["id"]
    name = f"json-secret-{uuid.uuid4().hex[:6]}"
    bed.prefect.post("/block_documents/", json={
        "name": name, "block_schema_id": schema_id, "block_type_id": block_type["id"],
        "data": {"value": {"username": "svc", "password": SECRET}},
    }).raise_for_status()
    direct = bed.prefect.get(f"/block_types/slug/secret/block_documents/name/{name}")
    assert SECRET in direct.text and schema.fields["secret_fields"] == ["value", "value"]  # Prefect's own answer leaks
    for user in ("viola", "otto", "anna"):
        for reply in (bed.client(user).get(f"/prefect/api/block_types/slug/secret/block_documents/name/{name}"),
                      bed.client(user).post("/prefect/api/block_documents/filter", json={})):
            assert reply.status_code == 403, reply.text
            _no_secret(reply)


def test_admins_may_read_secrets(bed, secret_block) -> None:
    reply = bed.client("adam").post("/prefect/api/block_documents/filter", json={"include_secrets": True})
    assert reply.status_code == 200 and SECRET in reply.text


def _runs_of(bed, deployment: dict) -> int:
    return bed.prefect.post("/flow_runs/count", json={"deployments": {"id": {"any_": [deployment["id"]]}}}).json()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"job_variables": {"command": "sh -c 'id > /tmp/pwned'"}}, "job_variables"),
        ({"job_variables": {"env": {"BASH_ENV": "/tmp/x"}}}, "job_variables"),
        ({"work_queue_name": "elsewhere"}, "work_queue_name"),
        ({"infrastructure_document_id": str(uuid.uuid4())}, "infrastructure_document_id"),
        ({"context": {"x": 1}}, "context"),
        ({"empirical_policy": {"retries": 50}}, "empirical_policy"),
        ({"labels": {"x": "y"}}, "labels"),
        ({"parameters": {"env": {"BASH_ENV": "/tmp/x"}}}, "env"),
        ({"parameters": {"command": "id"}}, "command"),
        ({"parameters": {"script": "backup"}}, "script"),
        ({"state": {"type": "RUNNING"}}, "state"),
        ({"state": {"type": "SCHEDULED", "state_details": {"pause_key": "x"}}}, "pause_key"),
        ({"state": {"type": "COMPLETED", "data": {"x": 1}}}, "state"),
    ],
)
def test_operator_run_starts_that_change_what_runs_are_refused(bed, deployment, body, named: str) -> None:
    before = _runs_of(bed, deployment)
    reply = bed.client("otto").post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run", json=body)
    assert reply.status_code == 403, reply.text
    assert named in reply.json()["detail"]
    assert _runs_of(bed, deployment) == before


def test_operator_starts_a_plain_or_scheduled_run(bed, deployment) -> None:
    before = _runs_of(bed, deployment)
    operator = bed.client("otto")
    plain = operator.post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run",
                          json={"parameters": {"args": ["a"], "host": "eu-1"}, "name": "mine", "tags": ["t"]})
    assert plain.status_code == 201, plain.text
    later = operator.post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run", json={
        "state": {"type": "SCHEDULED", "message": "Run from the Prefect UI",
                  "state_details": {"scheduled_time": "2099-01-01T00:00:00Z"}}})
    assert later.status_code == 201, later.text
    assert later.json()["state"]["type"] == "SCHEDULED"
    assert _runs_of(bed, deployment) == before + 2
    assert bed.prefect.get(f"/flow_runs/{plain.json()['id']}").json()["job_variables"] in ({}, None)


def test_operator_may_use_the_prefect_ui_custom_run_form(bed, deployment) -> None:
    """The run form sends job_variables {}, the deployment's own queue and an empty retry policy:
    those change nothing, so the gateway lets them through; a changed queue stays refused."""
    operator = bed.client("otto")
    url = f"/prefect/api/deployments/{deployment['id']}/create_flow_run"
    form = {
        "state": {"type": "SCHEDULED", "message": "", "state_details": {"scheduled_time": None}},
        "tags": [], "work_queue_name": deployment["work_queue_name"], "name": "from-the-form",
        "empirical_policy": {"retries": None, "retry_delay": None},
        "parameters": {"args": ["a"]}, "job_variables": {}, "enforce_parameter_schema": True,
    }
    before = _runs_of(bed, deployment)
    reply = operator.post(url, json=form)
    assert reply.status_code == 201, reply.text
    created = bed.prefect.get(f"/flow_runs/{reply.json()['id']}").json()
    assert created["job_variables"] in ({}, None) and created["work_queue_name"] == deployment["work_queue_name"]
    assert _runs_of(bed, deployment) == before + 1
    for changed in ({"job_variables": {"env": {"X": "1"}}}, {"work_queue_name": "elsewhere"},
                    {"empirical_policy": {"retries": 3}}):
        reply = operator.post(url, json={**form, **changed})
        assert reply.status_code == 403 and next(iter(changed)) in reply.json()["detail"], reply.text
    assert _runs_of(bed, deployment) == before + 1


def test_secret_parameters_are_stashed_before_prefect_stores_the_run(bed) -> None:
    """A secret script parameter given to Prefect's create_flow_run (the UI's run form does that)
    is replaced by a reference to a Prefect Secret block before Prefect sees the body, for operators
    and admins alike: a viewer reading runs and blocks never meets the value."""
    flow = bed.prefect.post("/flows/", json={"name": "run-script"}).raise_for_status().json()
    deployment = bed.prefect.post("/deployments/", json={
        "name": f"pay-secret-{uuid.uuid4().hex[:6]}", "flow_id": flow["id"],
        "parameters": {"script": "pay-report"}, "tags": ["payments", "host:eu-1", "sms"],
        "parameter_openapi_schema": {"type": "object", "properties": {
            "script": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "token": {"type": "string", "format": "password", "writeOnly": True}, "mode": {"type": "string"}}}}},
        "work_pool_name": None,
    }).raise_for_status().json()
    viewer = bed.client("viola")
    for user in ("otto", "adam"):
        reply = bed.client(user).post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run",
                                      json={"parameters": {"parameters": {"token": SECRET, "mode": "full"}}})
        assert reply.status_code == 201, reply.text
        _no_secret(reply)
        stored = bed.prefect.get(f"/flow_runs/{reply.json()['id']}").json()
        given = stored["parameters"]["parameters"]
        assert given["mode"] == "full" and given["token"].startswith("sms-secret:") and SECRET not in json.dumps(stored)
        for read in (viewer.post("/prefect/api/flow_runs/filter", json={}),
                     viewer.post("/prefect/api/flow_runs/paginate", json={})):
            assert read.status_code == 200, read.text
            _no_secret(read)
        name = given["token"].removeprefix("sms-secret:")
        kept = bed.prefect.get(f"/block_types/slug/secret/block_documents/name/{name}", params={"include_secrets": "true"})
        assert json.loads(kept.json()["data"]["value"])["value"] == SECRET  # kept for the run to claim, in Prefect's secret store
    # A start refused by the gateway or by Prefect (a value outside the schema) leaves no secret behind.
    stashes = _stashed_secrets(bed)
    for user, body in (("otto", {"parameters": {"parameters": {"token": SECRET}}, "context": {"x": 1}}),
                       ("otto", {"parameters": {"parameters": {"token": SECRET, "mode": 7}}}),
                       ("adam", {"parameters": {"parameters": {"token": SECRET, "mode": 7}}})):
        reply = bed.client(user).post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run", json=body)
        assert reply.status_code in (403, 409, 422), reply.text
        _no_secret(reply)
    assert _stashed_secrets(bed) == stashes


def _stashed_secrets(bed) -> set[str]:
    """The names of the run-secret blocks in Prefect."""
    documents = bed.prefect.post("/block_documents/filter", json={
        "block_types": {"slug": {"any_": ["secret"]}}, "limit": 200}).raise_for_status().json()
    return {d["name"] for d in documents if d["name"].startswith("sms-run-secret-")}


def test_bulk_starts_and_direct_runs_are_for_admins(bed, deployment) -> None:
    before = bed.counts()
    operator = bed.client("otto")
    bulk = operator.post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run/bulk", json=[{}])
    direct = operator.post("/prefect/api/flow_runs/", json={"flow_id": deployment["flow_id"], "deployment_id": deployment["id"]})
    assert (bulk.status_code, direct.status_code) == (403, 403)
    assert bed.counts() == before


@pytest.mark.parametrize(
    ("user", "method", "path", "body"),
    [
        ("otto", "POST", "/prefect/api/deployments/", {"name": "x", "flow_id": str(uuid.uuid4()),
                                                        "job_variables": {"command": "sh -c id"}}),
        ("otto", "POST", "/prefect/api/automations/", {"name": "x"}),
        ("otto", "POST", "/prefect/api/variables/", {"name": "x", "value": "1"}),
        ("anna", "POST", "/prefect/api/work_pools/", {"name": "x", "type": "process"}),
        ("anna", "POST", "/prefect/api/block_documents/", {"name": "x"}),
        ("viola", "POST", "/prefect/api/flow_runs/bulk_set_state", {"flow_run_ids": [], "state": {"type": "COMPLETED"}}),
        ("otto", "POST", "/prefect/api/flow_runs/bulk_set_state", {"flow_run_ids": [], "state": {"type": "CANCELLED"}}),
    ],
)
def test_changes_are_for_admins(bed, user: str, method: str, path: str, body) -> None:
    before = bed.counts()
    reply = bed.client(user).request(method, path, json=body)
    assert reply.status_code == 403 and "needs role sms-admin" in reply.json()["detail"], reply.text
    assert bed.counts() == before


def test_set_state_for_operators_is_cancel_or_retry_of_an_ended_run(bed, deployment) -> None:
    operator, viewer = bed.client("otto"), bed.client("viola")
    run = operator.post(f"/prefect/api/deployments/{deployment['id']}/create_flow_run", json={}).json()
    path = f"/prefect/api/flow_runs/{run['id']}/set_state"

    def state() -> str:
        return bed.prefect.get(f"/flow_runs/{run['id']}").json()["state"]["type"]

    refused = [
        {"state": {"type": "COMPLETED"}, "force": True},
        {"state": {"type": "RUNNING"}},
        {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}},  # the run has not ended
        {"state": {"type": "CANCELLING"}, "orchestration_parameters": {}},
        {"state": {"type": "CANCELLING", "state_details": {"pause_reschedule": True}}},
    ]
    for body in refused:
        reply = operator.post(path, json=body)
        assert reply.status_code == 403, (body, reply.text)
        assert state() == "SCHEDULED"
    assert viewer.post(path, json={"state": {"type": "CANCELLING"}}).status_code == 403
    cancelled = operator.post(path, json={"state": {"type": "CANCELLED"}, "force": True})
    assert cancelled.status_code in (200, 201), cancelled.text
    assert state() == "CANCELLED"
    forced = operator.post(path, json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True})
    assert forced.status_code == 403 and "force" in forced.json()["detail"]
    retry = operator.post(path, json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}})
    assert retry.status_code in (200, 201), retry.text


def test_role_is_checked_before_the_body_is_read(bed) -> None:
    """A viewer's POST to an admin route announcing 5 MiB is answered 403 after 10 bytes of it:
    the body was never waited for. So is a judged body announced over 1 MiB
    (413); a judged body longer than 1 MiB is a 413 too; admins' bodies are streamed unjudged."""
    started = time.monotonic()
    five_mib = 5 * 1024 * 1024
    assert bed.raw("viola", "POST", b"/prefect/api/variables/", b'{"name": "', declared_length=five_mib).status == 403
    assert bed.raw("otto", "POST", b"/prefect/api/flows/filter", b'{"flows": ', declared_length=five_mib).status == 413
    assert time.monotonic() - started < 30
    big = json.dumps({"flows": {"name": {"any_": ["x" * 1024] * 1100}}}).encode()
    assert bed.raw("viola", "POST", b"/prefect/api/flows/filter", big).status == 413
    assert bed.raw("adam", "POST", b"/prefect/api/flows/filter", big).status == 200  # admins' bodies stream
    assert bed.raw("viola", "POST", b"/prefect/api/flows/filter", b"{not json").status == 400
