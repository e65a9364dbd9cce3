"""Which SMS action each Prefect route needs (the proxy's part of the policy).

Paths are relative to Prefect's API base (``/prefect/api``); everything else under ``/prefect/``
is the UI's static files and needs ``read``.

- ``GET``/``HEAD`` and the read-only ``POST`` queries (``.../filter``, ``.../count``,
  ``.../paginate``, ``.../history``, ``/ui/...``, ``/events/count-by/...``): ``read``.
- ``POST /deployments/{id}/create_flow_run``: ``start``, on the deployment's script and host.
- ``POST /flow_runs/{id}/set_state``: to ``CANCELLING``/``CANCELLED`` is ``stop``, to
  ``SCHEDULED`` (retry) is ``start``, on the flow run's script and host; other states ``admin``.
- ``include_secrets=true`` anywhere, dot segments in the path, and every other change (deployments, blocks, variables,
  automations, work pools, concurrency limits, ...): ``admin``. Unlisted means ``admin``.
- Websockets: ``/events/out`` and ``/logs/out`` are ``read``; the rest (``/events/in``, task-run
  subscriptions, worker connections) ``admin``.

A run-script deployment names its script in the parameter ``script`` and its host in ``host`` or
in the tag ``host:<name>`` (``sms_plugin.deploy``); a run's own parameters override them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sms_plugin.gateway.rbac import Action

#: What a route's target is looked up from (None: the route has no script/host target).
TargetKind = Literal["deployment", "flow_run"]


@dataclass(frozen=True)
class RouteRule:
    """The action a request needs and, if it concerns one run, where its target comes from."""

    action: Action
    target: TargetKind | None = None
    object_id: str | None = None


_READ_POST = re.compile(
    r"^/(?:"
    r"[a-z_]+(?:/[^/]+/[a-z_]+)?/(?:filter|count|paginate|history)"  # flow_runs/filter, work_pools/x/queues/filter
    r"|ui/.+"  # the UI's read-only aggregate queries
    r"|events/(?:filter|count-by/[a-z_]+)"
    r"|(?:flow_runs|task_runs)/(?:lateness|history)"
    r"|csrf-token"
    r")$"
)
_CREATE_RUN = re.compile(r"^/deployments/(?P<id>[0-9a-fA-F-]{36})/create_flow_run$")
_SET_STATE = re.compile(r"^/flow_runs/(?P<id>[0-9a-fA-F-]{36})/set_state$")
_READ_SOCKETS = frozenset({"/events/out", "/logs/out"})
_STOP_STATES = frozenset({"CANCELLING", "CANCELLED"})

API_PREFIX = "api"


def api_path(path: str) -> str | None:
    """``path`` (relative to ``/prefect/``) as an API path such as ``/flow_runs/filter``, or None
    for a UI path."""
    clean = "/" + path.strip("/")
    if clean == f"/{API_PREFIX}" or clean.startswith(f"/{API_PREFIX}/"):
        return clean[len(API_PREFIX) + 1 :] or "/"
    return None


def _wants_secrets(query: Iterable[tuple[str, str]]) -> bool:
    return any(k.lower() == "include_secrets" and v.lower() not in ("false", "0", "") for k, v in query)


def http_rule(method: str, path: str, query: Iterable[tuple[str, str]], body: bytes) -> RouteRule:
    """The rule for an HTTP request to ``/prefect/<path>`` with ``query`` (every name/value pair,
    repeated names included); ``body`` is read for set_state only."""
    if _wants_secrets(query) or any(part in (".", "..") for part in path.split("/")):
        return RouteRule("admin")
    method = method.upper()
    route = api_path(path)
    if method in ("GET", "HEAD", "OPTIONS"):
        return RouteRule("read")
    if route is None:
        return RouteRule("admin")
    if method == "POST" and _READ_POST.match(route):
        return RouteRule("read")
    if method == "POST" and (match := _CREATE_RUN.match(route)):
        return RouteRule("start", "deployment", match["id"])
    if method == "POST" and (match := _SET_STATE.match(route)):
        state = _state_type(body)
        if state in _STOP_STATES:
            return RouteRule("stop", "flow_run", match["id"])
        if state == "SCHEDULED":
            return RouteRule("start", "flow_run", match["id"])
    return RouteRule("admin")


def needs_body(method: str, path: str) -> bool:
    """Whether :func:`http_rule` must see the body (set_state) or the target lookup does
    (create_flow_run parameters)."""
    route = api_path(path) or ""
    return method.upper() == "POST" and bool(_SET_STATE.match(route) or _CREATE_RUN.match(route))


def websocket_action(path: str) -> Action:
    """The action a websocket under ``/prefect/<path>`` needs."""
    return "read" if api_path(path) in _READ_SOCKETS else "admin"


def _state_type(body: bytes) -> str | None:
    try:
        state = json.loads(body or b"{}").get("state") or {}
        return str(state.get("type", "")).upper() or None
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class RunTarget:
    """The script and host a deployment or flow run is about."""

    script: str | None
    host: str | None


def run_target(parameters: dict[str, Any], tags: list[str], overrides: dict[str, Any] | None = None) -> RunTarget:
    """Script and host from run-script parameters and tags; ``overrides`` (a create_flow_run
    body's parameters) win."""
    merged = {**parameters, **(overrides or {})}
    host = merged.get("host") or next((t.split(":", 1)[1] for t in tags if t.startswith("host:")), None)
    script = merged.get("script")
    return RunTarget(str(script) if script else None, str(host) if host else None)


def body_parameters(body: bytes) -> dict[str, Any]:
    """The ``parameters`` of a create_flow_run body ({} when absent or unreadable)."""
    try:
        parameters = json.loads(body or b"{}").get("parameters") or {}
    except (ValueError, AttributeError):
        return {}
    return parameters if isinstance(parameters, dict) else {}
