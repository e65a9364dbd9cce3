"""The proxy's judgement, in-process on Prefect's real app routes (no server): canonical paths,
the route table covering every Prefect route, the roles x routes matrix, body schemas."""

from __future__ import annotations


import pytest

from sms_plugin.gateway import prefect_bodies
from sms_plugin.gateway.prefect_bodies import Refused, check_create_flow_run, secrets_requested, set_state_action
from sms_plugin.gateway.prefect_paths import BadPath, canonical_path
from sms_plugin.gateway.prefect_route_table import ROUTES
from sms_plugin.gateway.prefect_routes import (
    NoRoute,
    RunTarget,
    api_routes,
    resolve,
    role_action,
    route_keys,
    run_target,
)

ID = "5f0e7c1a-3b2d-4e8f-9a61-0c2b4d6e8f10"
"""Any deployment or flow run id: the route table matches its shape (a fixed one: ``-n 2`` needs the
same test ids in both processes)."""


def prefect_route_keys() -> list[str]:
    return [key for route in api_routes() for key in route_keys(route)]


def test_every_prefect_route_is_classified_and_only_those() -> None:
    keys = prefect_route_keys()
    assert len(keys) == len(set(keys)) > 190
    assert sorted(set(keys) - ROUTES.keys()) == [], "Prefect routes the table does not classify"
    assert sorted(ROUTES.keys() - set(keys)) == [], "table entries Prefect no longer has"


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    "raw",
    [
        b"/prefect/api/variables/%3Fx=/a/filter",  # encoded ?
        b"/prefect/api/variables/%3fx=/a/filter",  # ... lower case
        b"/prefect/api/variables/%23x/a/filter",  # encoded #
        b"/prefect/api/deployments/filter%2F..%2F..%2Fvariables",  # encoded /
        b"/prefect/api/variables/a%5Cb/filter",  # encoded backslash
        b"/prefect/api/variables/a\\b/filter",  # raw backslash
        b"/prefect/api/variables/%253F/filter",  # double encoding
        b"/prefect/api/variables/%C0%AF/filter",  # overlong UTF-8 for /
        b"/prefect/api/variables/%E0%80%AF/filter",  # overlong, 3 bytes
        b"/prefect/api/variables/%FF/filter",  # invalid UTF-8
        b"/prefect/api/%66lows/filter",  # needless escape
        b"/prefect/api/variables/../flows/filter",
        b"/prefect/api/variables/./filter",
        b"/prefect/api//variables/",
        b"/prefect/api/flows/filter%20",  # trailing space
        b"/prefect/api/flows/filter%09",  # tab
        b"/prefect/api/flows/filter%00",  # NUL
        b"/prefect/api/flows/fil%E2%80%8Bter",  # zero-width space
        b"/prefect/api/flows/filter\x7f",
        b"/prefect/api/flows/filter ",
        b"/prefect/api/fl\xc3\xb6ws/filter",  # raw non-ASCII
        b"prefect/api/flows/filter",
    ],
)
def test_non_canonical_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        canonical_path(raw)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"/prefect/api/flows/filter", "/prefect/api/flows/filter"),
        (b"/prefect/api/flows/", "/prefect/api/flows/"),
        (b"/prefect/api/deployments/name/run-script/pay%20report", "/prefect/api/deployments/name/run-script/pay report"),
        (b"/prefect/api/variables/name/caf%C3%A9", "/prefect/api/variables/name/caf\u00e9"),
        (b"/prefect/runs/flow-run/abc", "/prefect/runs/flow-run/abc"),
    ],
)
def test_canonical_paths_pass_decoded(raw: bytes, decoded: str) -> None:
    assert canonical_path(raw) == decoded


# ------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(
    ("method", "path", "key", "cls"),
    [
        ("GET", "/prefect/", "UI GET", "meta"),
        ("GET", "/prefect/runs/flow-run/abc", "UI GET", "meta"),
        ("GET", "/prefect/api/health", "GET /health", "meta"),
        ("POST", "/prefect/api/flow_runs/filter", "POST /flow_runs/filter", "read"),
        ("POST", "/prefect/api/work_pools/sms/queues/filter", "POST /work_pools/{work_pool_name}/queues/filter", "read"),
        ("POST", "/prefect/api/block_documents/filter", "POST /block_documents/filter", "admin"),
        ("POST", "/prefect/api/block_documents/count", "POST /block_documents/count", "read"),
        ("GET", f"/prefect/api/deployments/{ID}", "GET /deployments/{id:uuid}", "read"),
        ("POST", f"/prefect/api/deployments/{ID}/create_flow_run", "POST /deployments/{id:uuid}/create_flow_run", "start"),
        ("POST", f"/prefect/api/flow_runs/{ID}/set_state", "POST /flow_runs/{id:uuid}/set_state", "set_state"),
        ("POST", "/prefect/api/flow_runs/bulk_set_state", "POST /flow_runs/bulk_set_state", "admin"),
        ("POST", "/prefect/api/variables/", "POST /variables/", "admin"),
        ("POST", f"/prefect/api/deployments/{ID}/create_flow_run/bulk", "POST /deployments/{id:uuid}/create_flow_run/bulk", "admin"),
        ("GET", "/prefect/api/admin/settings", "GET /admin/settings", "admin"),
        ("GET", "/prefect/api/static/x.css", "MOUNT /static", "meta"),
    ],
)
def test_resolve_names_prefects_route(method: str, path: str, key: str, cls: str) -> None:
    found = resolve(method, path)
    assert (found.key, found.route_class) == (key, cls)


def test_resolve_path_parameters() -> None:
    assert resolve("POST", f"/prefect/api/deployments/{ID}/create_flow_run").params == {"id": ID}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/prefect/api/variables/x/a/filter", 404),  # what %3F would have been decoded to
        ("POST", "/prefect/api/flows", 404),
        ("POST", "/prefect/api/deployments/not-a-uuid/create_flow_run", 404),
        ("PUT", "/prefect/api/flows/filter", 405),
        ("HEAD", "/prefect/api/health", 405),
        ("POST", "/prefect/somewhere-in-the-ui", 405),
        ("GET", "/prefectx/api/flows/", 404),
        ("GET", "/prefect/v2", 404),  # the v2 UI, which Prefect mounts whatever its settings say
        ("GET", "/prefect/v2/", 404),
        ("HEAD", "/prefect/v2/assets/index.js", 404),
    ],
)
def test_no_endpoint(method: str, path: str, status: int) -> None:
    with pytest.raises(NoRoute) as refused:
        resolve(method, path)
    assert refused.value.status == status


def test_websocket_endpoints() -> None:
    assert resolve("GET", "/prefect/api/events/out", websocket=True).route_class == "read"
    assert resolve("GET", "/prefect/api/logs/out", websocket=True).route_class == "read"
    assert resolve("GET", "/prefect/api/events/in", websocket=True).route_class == "admin"
    assert resolve("GET", "/prefect/api/task_runs/subscriptions/scheduled", websocket=True).route_class == "admin"
    assert resolve("GET", "/prefect/api/work_pools/sms/workers/connect", websocket=True).route_class == "admin"
    for path in ("/prefect/api/flows/filter", "/prefect/api/static/x", "/prefect/"):
        with pytest.raises(NoRoute):
            resolve("GET", path, websocket=True)


# ------------------------------------------------------------------ roles x routes

ROLES = {
    "viewer": {"sms-viewer"},
    "operator": {"sms-operator"},
    "author": {"sms-author"},
    "admin": {"sms-admin"},
    "nobody": set(),
}
#: The expected action per role and route class (None: refused before any body is read).
EXPECTED = {
    "viewer": {"meta": "read", "read": "read", "start": None, "set_state": None, "admin": None},
    "operator": {"meta": "read", "read": "read", "start": "start", "set_state": "stop", "admin": None},
    "author": {"meta": "read", "read": "read", "start": None, "set_state": None, "admin": None},
    "admin": {"meta": "read", "read": "read", "start": "start", "set_state": "stop", "admin": "admin"},
    "nobody": {"meta": None, "read": None, "start": None, "set_state": None, "admin": None},
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_roles_by_every_prefect_route(role: str) -> None:
    """Generated from Prefect's app: every route, each role, the verdict of its class."""
    for key in prefect_route_keys():
        assert role_action(ROLES[role], ROUTES[key]) == EXPECTED[role][ROUTES[key]], (role, key)
    assert role_action(ROLES["admin"], None) is None  # unclassified: nobody


def test_every_route_a_non_admin_may_change_has_a_body_schema() -> None:
    """Only start and set_state change something and are open to non-admins; both are judged by
    prefect_bodies. Every other non-GET route a non-admin may call is a read-only query."""
    for key, cls in ROUTES.items():
        method, _, template = key.partition(" ")
        if cls in ("meta", "read") and method not in ("GET", "HEAD", "WS", "MOUNT"):
            assert template.endswith(("filter", "count", "paginate", "history", "lateness", "concurrency_status",
                                      "validate", "next-runs", "count-deployments", "count-task-runs", "counts")) \
                or template.startswith("/events/count-by/"), key


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ([("include_secrets", "true")], None),
        ([("include_secrets", "1")], None),
        ([("INCLUDE_SECRETS", "yes")], None),
        ([("include-secrets", "on")], None),
        ([("include_secrets", "false"), ("include_secrets", "true")], None),
        ([], {"include_secrets": True}),
        ([], {"Include_Secrets": "true"}),
        ([], {"include_secrets": 1}),
        ([], {"include_secrets": None}),
        ([], {"block_documents": {"include_secrets": True}}),
        ([], [{"x": [{"include_secrets": "t"}]}]),
    ],
)
def test_include_secrets_anywhere_is_found(query, body) -> None:
    assert secrets_requested(query, body) is not None


@pytest.mark.parametrize(
    ("query", "body"),
    [([], None), ([("include_secrets", "false")], None), ([("include_secrets", "0")], None),
     ([], {"include_secrets": False}), ([], {"limit": 10, "offset": 0})],
)
def test_include_secrets_false_is_fine(query, body) -> None:
    assert secrets_requested(query, body) is None


DEPLOYMENT = {
    "parameters": {"script": "pay-report"},
    "parameter_openapi_schema": {"properties": {"script": {}, "host": {}, "args": {}}},
    "enforce_parameter_schema": False,
    "work_queue_name": "default",
}
#: The body the Prefect UI's custom-run form sends with its defaults (read from its mapper).
UI_CUSTOM_RUN = {
    "state": {"type": "SCHEDULED", "message": "", "state_details": {"scheduled_time": None}},
    "tags": [], "work_queue_name": "default", "name": "brave-otter",
    "empirical_policy": {"retries": None, "retry_delay": None, "max_retries": None,
                         "retry_delay_seconds": None, "retry_jitter_factor": None},
    "parameters": {"script": "pay-report"}, "job_variables": {}, "enforce_parameter_schema": False,
}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"parameters": {"args": ["x"], "host": "eu-1"}, "name": "mine", "tags": ["t"], "idempotency_key": "k"},
        {"parameters": {"script": "pay-report"}},
        {"state": {"type": "SCHEDULED", "message": "Run from the Prefect UI",
                   "state_details": {"scheduled_time": "2030-01-01T00:00:00Z"}}, "enforce_parameter_schema": False},
        {"name": None, "idempotency_key": None, "state": None},  # an allowed field's null is absent
    ],
)
def test_create_flow_run_bodies_an_operator_may_send(body) -> None:
    assert isinstance(check_create_flow_run(body, DEPLOYMENT), dict)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"job_variables": {"command": "sh -c id"}}, "job_variables"),
        ({"job_variables": {"env": {}}}, "job_variables"),
        ({"job_variables": []}, "job_variables"),
        ({"empirical_policy": None}, "empirical_policy"),  # Prefect would fail on it (500)
        ({"empirical_policy": {"retry_type": "in_process"}}, "empirical_policy"),
        ({"empirical_policy": {"pause_keys": ["k"]}}, "empirical_policy"),
        ({"empirical_policy": []}, "empirical_policy"),
        ({"work_queue_name": "other"}, "work_queue_name"),
        ({"infrastructure_document_id": ID}, "infrastructure_document_id"),
        ({"context": {}}, "context"),
        ({"empirical_policy": {"retries": 9}}, "empirical_policy"),
        ({"parent_task_run_id": ID}, "parent_task_run_id"),
        ({"parameters": {"env": {"BASH_ENV": "/tmp/x"}}}, "env"),
        ({"parameters": {"script": "backup"}}, "script"),
        ({"parameters": []}, "parameters"),
        ({"tags": "a"}, "tags"),
        ({"enforce_parameter_schema": "no"}, "enforce_parameter_schema"),
        ({"state": {"type": "RUNNING"}}, "state"),
        ({"state": {"type": "SCHEDULED", "name": "Late"}}, "state"),
        ({"state": {"type": "SCHEDULED", "data": {"x": 1}}}, "state.data"),
        ({"state": {"type": "SCHEDULED", "state_details": {"pause_key": "x"}}}, "pause_key"),
        ([], "object"),
    ],
)
def test_create_flow_run_refusals_name_the_field(body, named: str) -> None:
    with pytest.raises(Refused, match=named):
        check_create_flow_run(body, DEPLOYMENT)


def test_create_flow_run_enforce_false_only_where_the_deployment_says_so() -> None:
    with pytest.raises(Refused, match="enforce_parameter_schema"):
        check_create_flow_run({"enforce_parameter_schema": False}, {**DEPLOYMENT, "enforce_parameter_schema": True})


@pytest.mark.parametrize(
    ("body", "run_state", "action"),
    [
        ({"state": {"type": "CANCELLING"}, "force": True}, "RUNNING", "stop"),
        ({"state": {"type": "CANCELLED", "name": "Cancelled", "message": "m"}}, "SCHEDULED", "stop"),
        ({"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": False},
         "FAILED", "start"),
        ({"state": {"type": "SCHEDULED"}}, "COMPLETED", "start"),
    ],
)
def test_set_state_for_operators(body, run_state: str, action: str) -> None:
    assert set_state_action(body, run_state) == action


@pytest.mark.parametrize(
    ("body", "run_state", "named"),
    [
        ({"state": {"type": "COMPLETED"}}, "RUNNING", "COMPLETED"),
        ({"state": {"type": "RUNNING"}, "force": True}, "FAILED", "RUNNING"),
        ({"state": {"type": "SCHEDULED"}}, "RUNNING", "ended"),
        ({"state": {"type": "SCHEDULED"}, "force": True}, "FAILED", "force"),
        ({"state": {"type": "SCHEDULED", "name": "Late"}}, "FAILED", "name"),
        ({"state": {"type": "CANCELLING", "data": {"x": 1}}}, "RUNNING", "data"),
        ({"state": {"type": "CANCELLING", "state_details": {"flow_run_id": ID}}}, "RUNNING", "state_details"),
        ({"state": {"type": "CANCELLING"}, "orchestration": 1}, "RUNNING", "orchestration"),
        ({"state": "CANCELLING"}, "RUNNING", "state"),
        (None, "RUNNING", "object"),
    ],
)
def test_set_state_refusals(body, run_state: str, named: str) -> None:
    with pytest.raises(Refused, match=named):
        set_state_action(body, run_state)


def test_final_states_are_prefects() -> None:
    from prefect.client.schemas.objects import TERMINAL_STATES

    assert prefect_bodies.FINAL_STATES == {state.value for state in TERMINAL_STATES}


def test_run_target_from_parameters_tags_and_overrides() -> None:
    tags = ["payments", "host:eu-1", "sms"]
    assert run_target({"script": "pay"}, tags) == RunTarget("pay", ("eu-1",))
    assert run_target({"script": "pay", "host": "us-2"}, tags) == RunTarget("pay", ("us-2",))
    assert run_target({"script": "pay"}, tags, {"script": "other", "host": "x"}) == RunTarget("other", ("x",))
    assert run_target({"script": "pay"}, tags, {"hosts": ["a", "b"]}) == RunTarget("pay", ("a", "b"))
    assert run_target({}, []) == RunTarget(None, ())
