"""Prefect's UI and API behind the gateway, under ``/prefect/`` (HTTP and websockets).

Prefect serves under the same base path (``PREFECT_UI_SERVE_BASE=/prefect``,
``PREFECT_SERVER_API_BASE_PATH=/prefect/api``) on loopback, protected by
``PREFECT_SERVER_API_AUTH_STRING``, which only the gateway knows. Each request is authenticated
(bearer token or session cookie), judged once (:mod:`sms_plugin.gateway.prefect_judge`: canonical
path, Prefect's own router for the endpoint, role, body, policy), then the exact bytes judged are
forwarded to Prefect with the gateway's own ``Authorization`` header; the caller's credentials and
cookies never reach Prefect. Answers come back without Prefect's ``date``/``server`` headers, and
in an encoding the caller asked for (``identity`` when it sent no ``Accept-Encoding``). A browser
without a session asking for a UI page is sent to ``/auth/login``.

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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR
from starlette.websockets import WebSocketDisconnect

from sms_plugin import tls
from sms_plugin.gateway import prefect_judge as judge
from sms_plugin.gateway.auth import AuthError, authenticate, require_principal, websocket_origin_allowed
from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import Action, Decision

#: Decides whether ``principal`` may do ``action`` on the script and every one of the hosts
#: (none given: the script alone, or the collection).
Authorize = Callable[[Principal, Action, str | None, Sequence[str]], Awaitable[Decision]]

PREFIX = "/prefect"
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "authorization", "cookie", "x-csrf-token",
})
#: Dropped from Prefect's answers: hop-by-hop, Prefect's cookies and auth prompts, and the
#: headers the gateway's own server sets (no duplicate ``date``/``server``).
_DROP_FROM_RESPONSE = frozenset({
    "connection", "keep-alive", "transfer-encoding", "set-cookie", "www-authenticate", "date", "server",
})


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

    @property
    def link(self) -> str:
        """How errors name this link."""
        return f"Prefect at {self.base_url}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{PREFIX}/{path.lstrip('/')}"

    def websocket_url(self, target: str) -> str:
        """The websocket URL of ``target``, a raw path (with query) starting ``/prefect/``."""
        return (self.base_url + target).replace("http://", "ws://", 1).replace("https://", "wss://", 1)

    async def get_json(self, path: str) -> Any:
        """GET ``/prefect/<path>`` (404 from Prefect becomes a 404 here, other failures a 502)."""
        try:
            reply = await self.http.get(self.url(path), headers=self.headers())
        except httpx.HTTPError as exc:
            raise HTTPException(502, detail=f"Prefect is unreachable: {tls.failure_name(self.link, exc)}") from None
        if reply.status_code == 404:
            raise HTTPException(404, detail=f"not found in Prefect: {path}")
        if reply.status_code >= 400:
            raise HTTPException(502, detail=f"Prefect answered {reply.status_code} for {path}")
        return reply.json()


router = APIRouter(include_in_schema=False)


def _upstream(conn: Request | WebSocket) -> PrefectUpstream:
    upstream = getattr(conn.app.state, "prefect", None)
    if upstream is None:
        raise HTTPException(503, detail="no Prefect server configured (SMS_GATEWAY_PREFECT_URL)")
    return upstream


async def routes_loaded(conn: Request | WebSocket) -> None:
    """Wait until Prefect's routes, read in the background at start, are there."""
    loading = getattr(conn.app.state, "prefect_routes", None)
    if loading is not None:
        await asyncio.shield(loading)


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers.setdefault("accept-encoding", "identity")  # never a body encoding the caller did not ask for
    headers["x-forwarded-for"] = request.client.host if request.client else ""
    headers["x-forwarded-proto"] = request.url.scheme
    headers["x-forwarded-host"] = request.headers.get("host", "")
    return headers


@router.api_route("/prefect", methods=["GET", "HEAD"])
async def prefect_root() -> Response:
    return Response(status_code=307, headers={"location": f"{PREFIX}/"})


@router.api_route("/prefect/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def proxy_http(request: Request, path: str) -> Response:
    """Canonical path, endpoint, caller, verdict; then stream the judged request to Prefect and
    the answer back."""
    upstream = _upstream(request)
    await routes_loaded(request)
    target_path = judge.forwarded_target(request)
    endpoint = judge.endpoint(request, target_path.path)
    try:
        principal = await require_principal(request)
    except HTTPException as exc:
        if exc.status_code == 401 and judge.is_browser_page(request, endpoint):
            return RedirectResponse(f"/auth/login?next={quote(target_path.target, safe='/')}", status_code=303)
        raise
    verdict = await judge.verdict(request, principal, endpoint, upstream)
    if path == "ui-settings" and request.method == "GET":
        return await _ui_settings(upstream)
    forwarded = {**_forward_headers(request), **upstream.headers()}
    if verdict.body is not None:
        forwarded.pop("content-length", None)  # the judged body may differ in length (secrets stashed)
    outgoing = upstream.http.build_request(
        request.method,
        upstream.base_url + target_path.target,
        headers=forwarded,
        content=verdict.body if verdict.body is not None else request.stream(),
        timeout=httpx.Timeout(30.0, read=None),
    )
    try:
        reply = await upstream.http.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        reply = None
        failure = f"Prefect is unreachable: {tls.failure_name(upstream.link, exc)}"
    status = reply.status_code if reply is not None else 502
    if verdict.stashed and status >= 400:  # no run was created: its secrets must not stay behind
        await judge.discard_stashed(verdict)
    if verdict.action != "read":
        await judge.audit_event(request, principal, verdict.action, "ok" if status < 400 else "error", {**verdict.detail, "status": status})
    if reply is None:
        return JSONResponse({"detail": failure}, status_code=502)
    headers = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP_FROM_RESPONSE}
    return StreamingResponse(
        reply.aiter_raw(), status_code=reply.status_code, headers=headers, background=BackgroundTask(reply.aclose)
    )


async def _ui_settings(upstream: PrefectUpstream) -> Response:
    """Prefect's UI settings without its basic-auth prompt (the gateway authenticates instead), and
    the v1 UI only: the v2 UI starts an analytics client whatever the analytics setting says."""
    settings = await upstream.get_json("ui-settings")
    settings.update(auth=None, default_ui="v1", available_uis=["v1"], v2_base_url=None)  # v2 calls an analytics host
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


async def _open_upstream(upstream: PrefectUpstream, target: str) -> Any:
    """A websocket to Prefect's ``target`` (raw path and query) that has passed Prefect's auth
    handshake."""
    url = upstream.websocket_url(target)
    connection = await websockets.connect(
        url,
        ssl=tls.client_context() if url.startswith("wss:") else None,
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
    """Check the path and the caller as for HTTP (``/events/out`` and ``/logs/out`` are reads,
    refused to narrowed readers; the rest is admin), then relay frames to and from Prefect."""
    if not await websocket_origin_allowed(websocket):
        return
    try:
        await routes_loaded(websocket)
        target = judge.forwarded_target(websocket)
        found = judge.endpoint(websocket, target.path, websocket=True)
    except HTTPException as exc:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=str(exc.detail)[:120])
        return
    offered = {p.strip() for h in websocket.headers.getlist("sec-websocket-protocol") for p in h.split(",")}
    speaks_prefect = "prefect" in offered
    principal = await _websocket_principal(websocket, speaks_prefect)
    accepted = websocket.client_state.name == "CONNECTED"
    if principal is None:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason="not authenticated")
        return
    try:
        action = await judge.check_role(websocket, principal, found)
        await judge.check_narrowed_read(websocket, principal, found)
    except HTTPException as exc:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=str(exc.detail)[:120])
        return
    if action != "read":
        await judge.audit_event(websocket, principal, action, "ok", {"method": "WEBSOCKET"})
    try:
        upstream_socket = await _open_upstream(_upstream(websocket), target.target)
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
