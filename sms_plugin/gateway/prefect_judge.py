"""The proxy's verdict on one request, taken once, on the bytes that will be forwarded.

Order (each step refuses before the next one runs):

1. the path: the raw request target must be canonical (:mod:`prefect_paths`, else 400) and the
   query plain printable ASCII (else 400);
2. the endpoint: Prefect's router resolves the path (:mod:`prefect_routes`, 404/405), the table
   gives its class; an unclassified route is denied (403);
3. the caller's roles must allow the class (403) — before any body is read;
4. non-admins only: the body is read, at most :data:`MAX_BODY` bytes (413), must be JSON (400),
   must not ask for secrets (403), must fit its route's schema (:mod:`prefect_bodies`, 403) and
   a fleet run's ``hosts`` and ``policy`` their checks (:func:`check_fleet`, 403);
   a caller whose ``read`` is narrowed by an access rule may not read run data here (403);
5. the policy decides on the run's script and host, or every host of a fleet run (403); a start or
   retry whose hosts a script's selector would pick only when it runs is refused (403).

Admins' requests are judged on path, endpoint and role only; their bodies are streamed unread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from prefect import get_client

from sms_plugin import fleet_hosts, run_secrets
from sms_plugin import hosts as host_services
from sms_plugin.errors import InvalidInput
from sms_plugin.fleet.policy import FleetPolicy
from sms_plugin.gateway import audit, prefect_bodies, prefect_paths, prefect_routes
from sms_plugin.gateway.prefect_routes import Endpoint, RunTarget
from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import ANY, Action, decide, granted_actions, narrowing_rules
from sms_plugin.gateway.targets import load_rules

#: The largest body the gateway reads to judge it (non-admins); larger is a 413.
MAX_BODY = 1024 * 1024
UI_KEY = prefect_routes.UI_KEY
_QUERY_ALPHABET = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%"
)
_WHERE_INSTEAD = (
    "your reads are narrowed by access rules, and Prefect's API cannot be narrowed per script: "
    "read your scripts, runs and logs through the SMS REST API at /api/v1 (GET /api/v1/runs, "
    "/api/v1/runs/{id}/logs)"
)


class Upstream(Protocol):
    async def get_json(self, path: str) -> Any: ...


@dataclass(frozen=True)
class Forwarded:
    """The exact request target forwarded: the decoded path, and the raw path + query."""

    path: str
    target: str


@dataclass(frozen=True)
class Verdict:
    """An allowed request: the action it is, what the audit says, and the judged body to
    forward (None: stream the caller's body unread)."""

    action: Action
    detail: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None
    stashed: tuple[str, ...] = ()
    """References of the secrets stashed for this request (discarded if Prefect refuses it)."""


def forwarded_target(conn: HTTPConnection) -> Forwarded:
    """The canonical path of ``conn`` and the raw target to forward; 400 otherwise."""
    raw = conn.scope.get("raw_path") or conn.scope["path"].encode("utf-8")
    query: bytes = conn.scope.get("query_string", b"")
    try:
        path = prefect_paths.canonical_path(raw)
    except prefect_paths.BadPath as exc:
        raise HTTPException(400, detail=f"refused path: {exc}") from None
    if not set(query) <= _QUERY_ALPHABET:
        raise HTTPException(400, detail="refused query: characters that must be percent-encoded")
    text = raw.decode("ascii")
    return Forwarded(path, f"{text}?{query.decode('ascii')}" if query else text)


def endpoint(conn: HTTPConnection, path: str, *, websocket: bool = False) -> Endpoint:
    """The Prefect endpoint ``path`` reaches; 404/405 when none does."""
    try:
        return prefect_routes.resolve(conn.scope.get("method", "GET"), path, websocket=websocket)
    except prefect_routes.NoRoute as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None


def is_browser_page(request: Request, found: Endpoint) -> bool:
    """A browser asking for a page of the UI (a login redirect is better than a JSON 401)."""
    return found.key == UI_KEY and request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def deny(conn: HTTPConnection, principal: Principal, action: Action, reason: str) -> HTTPException:
    """Audit a refusal and return the 403 to raise."""
    await audit_event(conn, principal, action, "denied", {"method": conn.scope.get("method", "WEBSOCKET"), "reason": reason})
    return HTTPException(403, detail=f"forbidden: {reason}")


async def audit_event(conn: HTTPConnection, principal: Principal, action: Action, outcome: str, detail: dict[str, Any]) -> None:
    """One audit event ``prefect.<action>`` (denials and allowed changes; reads are not audited,
    since the Prefect UI polls them several times a second)."""
    await audit.record(
        conn.app.state.catalog, audit.Caller(principal.username, principal.subject, audit.client_address(conn)),
        action=f"prefect.{action}", object_type="prefect", object_name=conn.url.path[:200], outcome=outcome,
        detail={k: v for k, v in detail.items() if v is not None},
    )


async def check_role(conn: HTTPConnection, principal: Principal, found: Endpoint) -> Action:
    """The action of ``found``'s class the caller's roles grant (``stop`` for set_state); 403 when none."""
    if found.route_class is None:
        raise await deny(conn, principal, "admin", f"Prefect route {found.key} is not classified; denied")
    action = prefect_routes.role_action(principal.roles, found.route_class)
    if action is None:
        wanted = max(prefect_routes.NEEDED[found.route_class])
        raise await deny(conn, principal, wanted, decide(principal, wanted, ANY, []).reason)
    return action


async def check_narrowed_read(conn: HTTPConnection, principal: Principal, found: Endpoint) -> None:
    """403 for a ``read``-class route when access rules narrow the caller's ``read``."""
    if found.route_class != "read":
        return
    rules = await load_rules(conn.app.state.catalog)
    if narrowing_rules(principal, "read", rules):
        raise await deny(conn, principal, "read", _WHERE_INSTEAD)


async def verdict(request: Request, principal: Principal, found: Endpoint, upstream: Upstream) -> Verdict:
    """Steps 3-5 of the module docstring for an HTTP request."""
    first = await check_role(request, principal, found)
    is_admin = "admin" in granted_actions(principal.roles)
    if is_admin:
        detail = {"method": request.method}
        if found.route_class != "start":
            return Verdict("read" if found.route_class in ("meta", "read") else "admin", detail)
        deployment = await upstream.get_json(f"api/deployments/{found.params['id']}")
        return await _stashed_verdict(Verdict("admin", detail, await read_body(request)), deployment)
    body = await read_body(request)
    data = _json(body)
    where = prefect_bodies.secrets_requested(request.query_params.multi_items(), data)
    if where is not None:
        raise await deny(request, principal, "admin", f"include_secrets ({where}) is for sms-admin only")
    await check_narrowed_read(request, principal, found)
    action, target = first, RunTarget(None, ())
    try:
        if found.route_class == "start":
            deployment = await upstream.get_json(f"api/deployments/{found.params['id']}")
            overrides = prefect_bodies.check_create_flow_run(data if data is not None else {}, deployment)
            await check_fleet(overrides)
            target = prefect_routes.run_target(deployment.get("parameters") or {}, deployment.get("tags") or [], overrides)
            if not target.hosts:
                raise prefect_bodies.Refused(
                    "this script runs on the hosts its selector picks when the run starts, which the gateway "
                    "cannot judge beforehand: give parameters.hosts, the exact host names"
                )
        elif found.route_class == "set_state":
            run = await upstream.get_json(f"api/flow_runs/{found.params['id']}")
            action = prefect_bodies.set_state_action(data, ((run.get("state") or {}).get("type")))
            target = prefect_routes.run_target(run.get("parameters") or {}, run.get("tags") or [])
            if action == "start" and not target.hosts:
                raise prefect_bodies.Refused(
                    "a retry of this run goes to the hosts its script's selector picks when it runs again, which "
                    "the gateway cannot judge beforehand: start it anew through the SMS REST API instead"
                )
    except prefect_bodies.Refused as exc:
        raise await deny(request, principal, first, str(exc)) from None
    one = len(target.hosts) == 1
    detail = {"method": request.method, "script": target.script, "host": target.hosts[0] if one else None,
              "hosts": None if one or not target.hosts else list(target.hosts)}
    decision = await request.app.state.authorize(principal, action, target.script, target.hosts)
    if not decision.allowed:
        await audit_event(request, principal, action, "denied", {**detail, "reason": decision.reason})
        raise HTTPException(403, detail=f"forbidden: {decision.reason}")
    if found.route_class == "start":  # allowed: only now is anything stored
        return await _stashed_verdict(Verdict(action, detail, body), deployment)
    return Verdict(action, detail, body)


async def check_fleet(parameters: dict[str, Any]) -> None:
    """A fleet run's ``hosts`` must be exact names of known hosts (no selector, no duplicates, at
    most 5,000; :mod:`sms_plugin.fleet_hosts`), not beside ``host``, and its ``policy`` valid;
    :class:`prefect_bodies.Refused` otherwise. Null counts as absent."""
    hosts, policy = parameters.get("hosts"), parameters.get("policy")
    try:
        if hosts is not None:
            if parameters.get("host") is not None:
                raise InvalidInput("give parameter 'host' or 'hosts', not both")
            fleet_hosts.check_names(hosts, {info.name for info in await host_services.listing()})
        if policy is not None:
            FleetPolicy.parse(policy)
    except InvalidInput as error:
        raise prefect_bodies.Refused(str(error)) from None


async def _stashed_verdict(verdict: Verdict, deployment: dict[str, Any]) -> Verdict:
    """``verdict`` of an allowed create_flow_run, its body's secret parameter values replaced by
    references to Prefect Secret blocks (:mod:`sms_plugin.run_secrets`), so that no reader of the
    run sees them; the references are kept to discard them if Prefect refuses the run."""
    data = _json(verdict.body or b"")
    run_parameters = data.get("parameters") if isinstance(data, dict) else None
    script_values = run_parameters.get("parameters") if isinstance(run_parameters, dict) else None
    secret_names = prefect_routes.secret_parameters(deployment)
    if not isinstance(script_values, dict) or not secret_names & set(script_values):
        return verdict
    script = str(run_parameters.get("script") or (deployment.get("parameters") or {}).get("script") or "")
    async with get_client() as client:
        stashed = await run_secrets.stash(client, script, script_values, secret_names)
    body = json.dumps({**data, "parameters": {**run_parameters, "parameters": stashed}}).encode()
    return Verdict(verdict.action, verdict.detail, body, run_secrets.references(stashed))


async def discard_stashed(verdict: Verdict) -> None:
    """Delete the secrets stashed for a create_flow_run that Prefect refused."""
    async with get_client() as client:
        await run_secrets.discard(client, verdict.stashed)


async def read_body(request: Request) -> bytes:
    """The request body, read while counting: 413 beyond :data:`MAX_BODY` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> HTTPException:
    return HTTPException(413, detail=f"request body over {MAX_BODY} bytes (the gateway judges bodies up to 1 MiB)")


def _json(body: bytes) -> Any:
    """The body as Prefect will parse it (the same ``json.loads``); 400 when it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise HTTPException(400, detail="the request body is not JSON") from None
