"""Which Prefect endpoint a proxied request reaches, and the class of SMS action it needs.

The truth about which endpoint a path reaches is Prefect's own router: :func:`resolve` matches
the (canonical, see :mod:`prefect_paths`) path with Starlette's route matching against the
routes of Prefect's real server app (``prefect.server.api.server.create_app``), first full match
wins as in Starlette's router, and looks the route up in the explicit table
:data:`prefect_route_table.ROUTES`. Paths under ``/prefect/`` outside ``/prefect/api/`` are the
UI's files (``GET``/``HEAD`` only, class ``meta``), except the v2 UI under ``/prefect/v2``: Prefect
mounts it whatever its settings say, and it starts an analytics client, so the gateway has no route
to it.

A run-script deployment names its script in the parameter ``script`` and its host in ``host`` or
in the tag ``host:<name>`` (``sms_plugin.deploy``); a run's own parameters override them, and a
fleet run names its hosts in ``hosts``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import Match, Mount, WebSocketRoute

from sms_plugin.gateway.prefect_route_table import ROUTES, RouteClass
from sms_plugin.gateway.rbac import Action, granted_actions

PREFIX = "/prefect"
API_PREFIX = "/prefect/api"
UI_KEY = "UI GET"
V2_UI_PREFIX = "/prefect/v2"

#: The actions a caller's roles must grant before the gateway reads a body of that class.
NEEDED: dict[RouteClass, frozenset[Action]] = {
    "meta": frozenset({"read"}),
    "read": frozenset({"read"}),
    "start": frozenset({"start"}),
    "set_state": frozenset({"stop", "start"}),
    "admin": frozenset({"admin"}),
}


def role_action(roles: Iterable[str], route_class: RouteClass | None) -> Action | None:
    """The action of ``route_class`` that ``roles`` grant (``stop`` before ``start`` for
    set_state), or None: the roles may not call such a route (nor may anyone an unclassified one)."""
    if route_class is None:
        return None
    granted = granted_actions(roles) & NEEDED[route_class]
    return max(granted) if granted else None


class NoRoute(Exception):
    """No Prefect endpoint takes this request: ``status`` 404 (no route) or 405 (other method)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Endpoint:
    """The Prefect route a request reaches: its table key, class (None: unclassified, denied)
    and path parameters."""

    key: str
    route_class: RouteClass | None
    params: dict[str, str] = field(default_factory=dict)


@functools.cache
def api_routes() -> tuple[RouteContext, ...]:
    """The routes of Prefect's API app, in its router's order (built once per process)."""
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, webserver_only=True, ignore_cache=True)
    api = next(route.app for route in app.routes if isinstance(route, Mount) and route.name == "api")
    return tuple(iter_route_contexts(api.routes))


def route_keys(route: RouteContext) -> list[str]:
    """The table keys of ``route``: one per method, ``WS path`` or ``MOUNT path``."""
    if isinstance(route.original_route, Mount):
        return [f"MOUNT {route.path}"]
    if isinstance(route.original_route, WebSocketRoute):
        return [f"WS {route.path}"]
    return [f"{method} {route.path}" for method in sorted(route.methods or ())]


def resolve(method: str, path: str, *, websocket: bool = False) -> Endpoint:
    """The endpoint of ``method`` on the canonical decoded ``path`` (starting ``/prefect/``);
    :class:`NoRoute` when Prefect has none."""
    if path.startswith(API_PREFIX + "/"):
        return _resolve_api(method.upper(), path[len(API_PREFIX) :], websocket)
    if websocket or not path.startswith(PREFIX + "/"):
        raise NoRoute(404, "no such Prefect route")
    if path == V2_UI_PREFIX or path.startswith(V2_UI_PREFIX + "/"):
        raise NoRoute(404, "the v2 Prefect UI is not served (it calls an analytics host): use /prefect/")
    if method.upper() not in ("GET", "HEAD"):
        raise NoRoute(405, "the Prefect UI's files are read with GET")
    return Endpoint(UI_KEY, "meta")


def _resolve_api(method: str, api_path: str, websocket: bool) -> Endpoint:
    scope: dict[str, Any] = {
        "type": "websocket" if websocket else "http", "path": api_path, "root_path": "",
        "method": method, "path_params": {}, "headers": [],
    }
    partial = False
    for route in api_routes():
        match, child = route.matches(scope)
        if match == Match.FULL:
            params = {name: str(value) for name, value in child.get("path_params", {}).items()}
            key = _key(route, method)
            if websocket != key.startswith("WS "):
                raise NoRoute(404, "no such Prefect websocket")
            return Endpoint(key, ROUTES.get(key), params)
        partial = partial or match == Match.PARTIAL
    if partial:
        raise NoRoute(405, f"Prefect's route does not take {method}")
    raise NoRoute(404, "no such Prefect API route")


def _key(route: RouteContext, method: str) -> str:
    first = route_keys(route)[0] if isinstance(route.original_route, (Mount, WebSocketRoute)) else None
    return first or f"{method} {route.path}"


@dataclass(frozen=True)
class RunTarget:
    """The script and hosts a deployment or flow run is about (several: a fleet run's ``hosts``)."""

    script: str | None
    hosts: tuple[str, ...]


def run_target(parameters: dict[str, Any], tags: list[str], overrides: dict[str, Any] | None = None) -> RunTarget:
    """Script and hosts from run-script parameters and tags; ``overrides`` (a create_flow_run
    body's parameters) win. A fleet run's ``hosts`` must be a list (checked before, for a body)."""
    merged = {**parameters, **(overrides or {})}
    script = merged.get("script")
    fleet = merged.get("hosts")
    if isinstance(fleet, list):
        return RunTarget(str(script) if script else None, tuple(str(name) for name in fleet))
    host = merged.get("host") or next((t.split(":", 1)[1] for t in tags if t.startswith("host:")), None)
    return RunTarget(str(script) if script else None, (str(host),) if host else ())


def secret_parameters(deployment: dict[str, Any]) -> set[str]:
    """The names of a run-script deployment's secret script parameters (``format: password`` in
    its parameter schema)."""
    schema = (deployment.get("parameter_openapi_schema") or {}).get("properties") or {}
    declared = (schema.get("parameters") or {}).get("properties") or {}
    return {name for name, prop in declared.items() if isinstance(prop, dict) and prop.get("format") == "password"}
