"""Prefect's UI and API behind the gateway, under ``/prefect/`` (HTTP and websockets).

Prefect serves under the same base path (``PREFECT_UI_SERVE_BASE=/prefect``,
``PREFECT_SERVER_API_BASE_PATH=/prefect/api``) on loopback, protected by
``PREFECT_SERVER_API_AUTH_STRING``, which only the gateway knows. Each request is authenticated
(bearer token or session cookie), checked (:mod:`sms_plugin.gateway.prefect_routes` names the
action, ``app.state.authorize`` decides), then streamed to Prefect with the gateway's own
``Authorization`` header; the caller's credentials and cookies never reach Prefect.

Websockets: the caller is authenticated at the handshake (cookie or bearer header), or, for
Prefect clients, by the access token in Prefect's first message ``{"type": "auth", "token": ...}``.
Upstream, the gateway speaks Prefect's protocol (subprotocol ``prefect``, auth message with the
auth string) and then relays frames both ways.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import websockets
from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR
from starlette.websockets import WebSocketDisconnect

from sms_plugin.gateway import audit, prefect_routes
from sms_plugin.gateway.auth import AuthError, authenticate, require_principal, websocket_origin_allowed
from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import Action, Decision

#: Decides whether ``principal`` may do ``action`` on the script and host (None: no target).
Authorize = Callable[[Principal, Action, str | None, str | None], Awaitable[Decision]]

PREFIX = "/prefect"
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "authorization", "cookie", "x-csrf-token",
})
_DROP_FROM_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "set-cookie", "www-authenticate"})


class PrefectUpstream:
    """The Prefect server behind the gateway: base URL, auth string, one pooled HTTP client."""

    def __init__(self, base_url: str, auth_string: str | None, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_string = auth_string
        self.http = http

    def headers(self) -> dict[str, str]:
        if not self.auth_string:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.auth_string.encode()).decode()}

    def url(self, path: str) -> str:
        return f"{self.base_url}{PREFIX}/{path.lstrip('/')}"

    def websocket_url(self, path: str, query: str) -> str:
        url = self.url(path).replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{url}?{query}" if query else url

    async def get_json(self, path: str) -> Any:
        """GET ``/prefect/<path>`` (404 from Prefect becomes a 404 here)."""
        reply = await self.http.get(self.url(path), headers=self.headers())
        if reply.status_code == 404:
            raise HTTPException(404, detail=f"not found in Prefect: {path}")
        reply.raise_for_status()
        return reply.json()


router = APIRouter(include_in_schema=False)


def _upstream(conn: Request | WebSocket) -> PrefectUpstream:
    upstream = getattr(conn.app.state, "prefect", None)
    if upstream is None:
        raise HTTPException(503, detail="no Prefect server configured (SMS_GATEWAY_PREFECT_URL)")
    return upstream


async def _target(upstream: PrefectUpstream, rule: prefect_routes.RouteRule, body: bytes) -> prefect_routes.RunTarget:
    if rule.target == "deployment":
        deployment = await upstream.get_json(f"api/deployments/{rule.object_id}")
        return prefect_routes.run_target(
            deployment.get("parameters") or {}, deployment.get("tags") or [], prefect_routes.body_parameters(body)
        )
    if rule.target == "flow_run":
        run = await upstream.get_json(f"api/flow_runs/{rule.object_id}")
        return prefect_routes.run_target(run.get("parameters") or {}, run.get("tags") or [])
    return prefect_routes.RunTarget(None, None)


async def _check(
    conn: Request | WebSocket, principal: Principal, rule: prefect_routes.RouteRule, body: bytes
) -> dict[str, Any]:
    """403 unless the policy allows ``rule``; returns what the audit event should say."""
    target = await _target(_upstream(conn), rule, body)
    decision: Decision = await conn.app.state.authorize(principal, rule.action, target.script, target.host)
    detail = {"method": conn.scope.get("method", "WEBSOCKET"), "script": target.script, "host": target.host}
    if not decision.allowed:
        await _audit(conn, principal, rule, "denied", {**detail, "reason": decision.reason})
        raise HTTPException(403, detail=f"forbidden: {decision.reason}")
    return detail


async def _audit(
    conn: Request | WebSocket, principal: Principal, rule: prefect_routes.RouteRule, outcome: str, detail: dict[str, Any]
) -> None:
    """One audit event ``prefect.<action>`` for a denied request or an allowed change (reads are
    not audited: the Prefect UI polls them several times a second)."""
    path = conn.url.path
    await audit.record(
        conn.app.state.catalog, audit.Caller(principal.username, principal.subject, audit.client_address(conn)),
        action=f"prefect.{rule.action}", object_type="prefect", object_name=path[:200], outcome=outcome,
        detail={k: v for k, v in detail.items() if v is not None},
    )


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers["x-forwarded-for"] = request.client.host if request.client else ""
    headers["x-forwarded-proto"] = request.url.scheme
    headers["x-forwarded-host"] = request.headers.get("host", "")
    return headers


@router.api_route("/prefect", methods=["GET", "HEAD"])
async def prefect_root() -> Response:
    return Response(status_code=307, headers={"location": f"{PREFIX}/"})


@router.api_route("/prefect/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def proxy_http(request: Request, path: str) -> Response:
    """Authenticate, authorize, then stream the request to Prefect and the answer back."""
    principal = await require_principal(request)
    upstream = _upstream(request)
    body = await request.body() if prefect_routes.needs_body(request.method, path) else b""
    rule = prefect_routes.http_rule(request.method, path, request.query_params.multi_items(), body)
    detail = await _check(request, principal, rule, body)
    if path == "ui-settings" and request.method == "GET":
        return await _ui_settings(upstream)
    outgoing = upstream.http.build_request(
        request.method,
        upstream.url(path),
        params=request.query_params.multi_items(),
        headers={**_forward_headers(request), **upstream.headers()},
        content=body if body else request.stream(),
        timeout=httpx.Timeout(30.0, read=None),
    )
    try:
        reply = await upstream.http.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        reply = None
        failure = f"Prefect is unreachable: {type(exc).__name__}"
    if rule.action != "read":
        status = reply.status_code if reply is not None else 502
        await _audit(request, principal, rule, "ok" if status < 400 else "error", {**detail, "status": status})
    if reply is None:
        return JSONResponse({"detail": failure}, status_code=502)
    headers = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP_FROM_RESPONSE}
    return StreamingResponse(
        reply.aiter_raw(), status_code=reply.status_code, headers=headers, background=BackgroundTask(reply.aclose)
    )


async def _ui_settings(upstream: PrefectUpstream) -> Response:
    """Prefect's UI settings without its basic-auth prompt: the gateway authenticates instead."""
    settings = await upstream.get_json("ui-settings")
    settings["auth"] = None
    return JSONResponse(settings)


async def _websocket_principal(websocket: WebSocket, speaks_prefect: bool) -> Principal | None:
    """Handshake credentials first; else (Prefect clients) the token of the first message,
    which is then consumed. None when neither authenticates."""
    try:
        return await authenticate(websocket)
    except HTTPException:
        if not speaks_prefect:
            return None
    await websocket.accept(subprotocol="prefect")
    try:
        message = await asyncio.wait_for(websocket.receive_json(), timeout=10)
        token = message.get("token") if isinstance(message, dict) and message.get("type") == "auth" else None
        if not token:
            return None
        return await websocket.app.state.authenticator.verifier.verify(str(token))
    except (AuthError, ValueError, asyncio.TimeoutError, WebSocketDisconnect):
        return None


async def _open_upstream(upstream: PrefectUpstream, path: str, query: str) -> Any:
    """A websocket to Prefect that has passed Prefect's auth handshake."""
    connection = await websockets.connect(
        upstream.websocket_url(path, query),
        subprotocols=[websockets.Subprotocol("prefect")],
        additional_headers=upstream.headers(),
        open_timeout=15,
    )
    await connection.send(json.dumps({"type": "auth", "token": upstream.auth_string}))
    reply = json.loads(await asyncio.wait_for(connection.recv(), timeout=15))
    if reply.get("type") != "auth_success":
        await connection.close()
        raise ConnectionError(f"Prefect refused the gateway's websocket auth: {reply}")
    return connection


@router.websocket("/prefect/{path:path}")
async def proxy_websocket(websocket: WebSocket, path: str) -> None:
    """Authenticate and authorize the caller, then relay frames to and from Prefect."""
    if not await websocket_origin_allowed(websocket):
        return
    offered = {p.strip() for h in websocket.headers.getlist("sec-websocket-protocol") for p in h.split(",")}
    speaks_prefect = "prefect" in offered
    principal = await _websocket_principal(websocket, speaks_prefect)
    accepted = websocket.client_state.name == "CONNECTED"
    if principal is None:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason="not authenticated")
        return
    rule = prefect_routes.RouteRule(prefect_routes.websocket_action(path))
    try:
        detail = await _check(websocket, principal, rule, b"")
    except HTTPException as exc:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=str(exc.detail)[:120])
        return
    if rule.action != "read":
        await _audit(websocket, principal, rule, "ok", detail)
    try:
        upstream_socket = await _open_upstream(_upstream(websocket), path, websocket.url.query)
    except (OSError, ConnectionError, websockets.WebSocketException, asyncio.TimeoutError):
        await websocket.close(WS_1011_INTERNAL_ERROR, reason="Prefect is unreachable")
        return
    async with upstream_socket:
        if not accepted:
            await websocket.accept(subprotocol="prefect" if speaks_prefect else None)
            if speaks_prefect:  # the client's own auth message: answered here, never forwarded
                await websocket.receive_text()
        if speaks_prefect:
            await websocket.send_json({"type": "auth_success"})
        await _relay(websocket, upstream_socket)


async def _relay(client: WebSocket, upstream: Any) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                return
            await upstream.send(message.get("text") if message.get("text") is not None else message.get("bytes"))

    async def upstream_to_client() -> None:
        async for frame in upstream:
            if isinstance(frame, bytes):
                await client.send_bytes(frame)
            else:
                await client.send_text(frame)

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await client.close()
