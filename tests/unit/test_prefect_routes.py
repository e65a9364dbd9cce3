"""The action each Prefect route needs, and the script/host a run is about (pure functions)."""

from __future__ import annotations

import json
import uuid

import pytest

from sms_plugin.gateway.prefect_routes import RouteRule, RunTarget, http_rule, run_target, websocket_action

ID = str(uuid.uuid4())


def state(kind: str) -> bytes:
    return json.dumps({"state": {"type": kind}, "force": True}).encode()


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "expected"),
    [
        ("GET", "", {}, b"", RouteRule("read")),  # the UI
        ("GET", "runs/abc", {}, b"", RouteRule("read")),  # a UI route
        ("GET", f"api/deployments/{ID}", {}, b"", RouteRule("read")),
        ("POST", "api/flow_runs/filter", {}, b"", RouteRule("read")),
        ("POST", "api/work_pools/sms/queues/filter", {}, b"", RouteRule("read")),
        ("POST", "api/ui/flow_runs/history", {}, b"", RouteRule("read")),
        ("POST", "api/events/count-by/event", {}, b"", RouteRule("read")),
        ("POST", f"api/deployments/{ID}/create_flow_run", {}, b"{}", RouteRule("start", "deployment", ID)),
        ("POST", f"api/flow_runs/{ID}/set_state", {}, state("CANCELLING"), RouteRule("stop", "flow_run", ID)),
        ("POST", f"api/flow_runs/{ID}/set_state", {}, state("cancelled"), RouteRule("stop", "flow_run", ID)),
        ("POST", f"api/flow_runs/{ID}/set_state", {}, state("SCHEDULED"), RouteRule("start", "flow_run", ID)),
        ("POST", f"api/flow_runs/{ID}/set_state", {}, state("COMPLETED"), RouteRule("admin")),
        ("POST", f"api/flow_runs/{ID}/set_state", {}, b"not json", RouteRule("admin")),
        ("GET", "api/block_documents/x", {"include_secrets": "true"}, b"", RouteRule("admin")),
        ("POST", "api/block_documents/filter", {"include_secrets": "True"}, b"", RouteRule("admin")),
        ("POST", "api/block_documents/filter", {"include_secrets": "false"}, b"", RouteRule("read")),
        ("POST", "api/block_documents/filter", [("include_secrets", "false"), ("INCLUDE_SECRETS", "1")], b"",
         RouteRule("admin")),
        ("POST", "api/variables/", {}, b"", RouteRule("admin")),
        ("PATCH", f"api/deployments/{ID}", {}, b"", RouteRule("admin")),
        ("DELETE", f"api/flow_runs/{ID}", {}, b"", RouteRule("admin")),
        ("POST", "api/automations/", {}, b"", RouteRule("admin")),
        ("POST", "api/events", {}, b"", RouteRule("admin")),
        ("POST", "api/deployments/filter/../../variables", {}, b"", RouteRule("admin")),
        ("POST", "api/variables/x/../filter", {}, b"", RouteRule("admin")),
        ("GET", "api/../api/flows", {}, b"", RouteRule("admin")),
        ("POST", "somewhere-in-the-ui", {}, b"", RouteRule("admin")),
        ("PUT", "api/flows/filter", {}, b"", RouteRule("admin")),
    ],
)
def test_http_rule(method, path, query, body, expected) -> None:
    pairs = list(query.items()) if isinstance(query, dict) else query
    assert http_rule(method, path, pairs, body) == expected


def test_websocket_actions() -> None:
    assert websocket_action("api/events/out") == "read"
    assert websocket_action("api/logs/out") == "read"
    assert websocket_action("api/events/in") == "admin"
    assert websocket_action("api/task_runs/subscriptions/scheduled") == "admin"
    assert websocket_action("api/work_pools/sms/workers/connect") == "admin"


def test_run_target_from_parameters_tags_and_overrides() -> None:
    tags = ["payments", "host:eu-1", "sms"]
    assert run_target({"script": "pay"}, tags) == RunTarget("pay", "eu-1")
    assert run_target({"script": "pay", "host": "us-2"}, tags) == RunTarget("pay", "us-2")
    assert run_target({"script": "pay"}, tags, {"script": "other", "host": "x"}) == RunTarget("other", "x")
    assert run_target({}, []) == RunTarget(None, None)
