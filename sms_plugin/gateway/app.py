"""The gateway application: one FastAPI app in front of SMS and Prefect.

Routes: ``/healthz`` (alive), ``/readyz`` (Keycloak keys loaded and Prefect answering),
``/auth/*`` (login), ``/api/v1/*`` (SMS REST API; spec at ``/api/v1/openapi.json``, docs at
``/api/v1/docs``), ``/hooks/*`` (webhooks), ``/prefect/*`` (Prefect UI and API, proxied), and the web
console (:mod:`sms_plugin.gateway.console`) at ``/`` and every other GET path.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sms_plugin import tls
from sms_plugin.catalog import Catalog
from sms_plugin.errors import NotFound
from sms_plugin.gateway import auth, console, prefect_routes, proxy, sessions
from sms_plugin.gateway.config import GatewaySettings
from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import ANY, Action, Decision, Target, decide, decide_selection
from sms_plugin.gateway.targets import Targets, load_rules

#: Routers of the SMS REST API and the webhooks, included when their modules exist.
_OPTIONAL_ROUTERS = (
    "sms_plugin.gateway.api", "sms_plugin.gateway.fleet_api", "sms_plugin.gateway.console_api",
    "sms_plugin.gateway.host_api", "sms_plugin.gateway.monitor_api", "sms_plugin.gateway.webhooks",
)


def catalog_authorize(catalog: Catalog) -> proxy.Authorize:
    """The proxy's authorization: ``rbac.decide`` with the catalog's rules, on the script (tags)
    and host (labels) of the request, or on the whole collection when there is none; the hosts of
    a fleet run are judged all or nothing (``rbac.decide_selection``)."""

    async def authorize(principal: Principal, action: Action, script: str | None, hosts: Sequence[str]) -> Decision:
        rules = await load_rules(catalog)
        targets = Targets(catalog)
        if len(hosts) > 1:
            return decide_selection(principal, action, [await targets.run(script or "", host) for host in hosts], rules)
        target: Target = ANY
        if script and hosts:
            target = await targets.run(script, hosts[0])
        elif script:
            try:
                target = await targets.script_named(script)
            except NotFound:
                target = Target(script=script)
        return decide(principal, action, target, rules)

    return authorize


def create_app(settings: GatewaySettings, *, catalog: Catalog | None = None) -> FastAPI:
    """The gateway for ``settings``; ``catalog`` defaults to the one of SMS_DATABASE_URL."""
    catalog = catalog or Catalog()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trust = tls.client_context()  # Keycloak and Prefect: certificates verified against SMS_CA_BUNDLE
        async with httpx.AsyncClient(timeout=15.0, verify=trust) as idp_http, \
                httpx.AsyncClient(timeout=30.0, verify=trust) as prefect_http:
            app.state.authenticator = auth.Authenticator(settings, idp_http)
            if settings.prefect_url:
                secret = settings.prefect_auth_string
                app.state.prefect = proxy.PrefectUpstream(
                    settings.prefect_url, secret.get_secret_value() if secret else None, prefect_http
                )
                # Prefect's routes (importing its server takes seconds): read in the background,
                # the proxy waits for them (proxy.routes_loaded).
                app.state.prefect_routes = asyncio.create_task(asyncio.to_thread(prefect_routes.api_routes))
            yield

    app = FastAPI(
        title="SMS gateway",
        version="1",
        description="Script Management System: REST API, login and the Prefect proxy.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.catalog = catalog
    app.state.authorize = catalog_authorize(catalog)
    app.state.prefect = None
    app.add_middleware(
        sessions.SessionMiddleware,
        store=sessions.SessionStore(catalog, settings.session_secret.get_secret_value()),
        secure=settings.tls,
    )

    @app.get("/healthz", tags=["health"], summary="The gateway process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Keycloak's keys are loaded and Prefect answers")
    async def readyz(request: Request) -> JSONResponse:
        checks = await _readiness(request.app)
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    app.include_router(auth.router)
    for module_name in _OPTIONAL_ROUTERS:
        router = _optional_router(module_name)
        if router is not None:
            app.include_router(router)
    app.include_router(proxy.router)
    app.include_router(console.router(_origin(settings.oidc_issuer)))  # last: it answers every other GET
    return app


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"



def _optional_router(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    return module.router


async def _readiness(app: FastAPI) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await app.state.authenticator.verifier.keys_loaded()
        checks["keycloak"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["keycloak"] = f"unavailable: {tls.failure_name(f'Keycloak at {app.state.settings.oidc_issuer}', exc)}"
    upstream: proxy.PrefectUpstream | None = app.state.prefect
    if upstream is not None:
        try:
            reply = await upstream.http.get(upstream.url("api/health"), timeout=5)
            checks["prefect"] = "ok" if reply.status_code == 200 else f"HTTP {reply.status_code}"
        except httpx.HTTPError as exc:
            checks["prefect"] = f"unavailable: {tls.failure_name(upstream.link, exc)}"
    return checks
