"""The real gateway app (``create_app``) served by uvicorn on a loopback port, in front of the
test bed's Keycloak and Prefect server; import the fixtures into a test module to use them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import uvicorn
from fastapi import FastAPI

from infra.testbed.ports import free_port
from sms_plugin.catalog import Catalog
from sms_plugin.gateway.app import create_app
from sms_plugin.gateway.config import GatewaySettings

USERS = ("viola", "otto", "anna", "adam", "paula")
TOKEN_SECONDS = 60  # well inside the realm's access token lifetime


@dataclass
class Gateway:
    url: str
    app: FastAPI
    catalog: Catalog
    keycloak: object
    _tokens: dict[str, tuple[float, str]] = field(default_factory=dict)

    def headers(self, user: str | None) -> dict[str, str]:
        """Authorization header with a fresh-enough Keycloak access token of ``user`` (none for None)."""
        if user is None:
            return {}
        taken, token = self._tokens.get(user, (0.0, ""))
        if time.monotonic() - taken > TOKEN_SECONDS:
            token = self.keycloak.token(user)  # type: ignore[attr-defined]
            self._tokens[user] = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"}


@contextmanager
def serve(keycloak, catalog: Catalog, **settings_given: object) -> Iterator[Gateway]:
    """The gateway app on http://127.0.0.1:PORT over ``catalog``, until the block ends; ``settings_given``
    are further :class:`GatewaySettings` fields (e.g. ``prometheus_url``)."""
    port = free_port()
    settings = GatewaySettings(oidc_issuer=keycloak.issuer, port=port, host="127.0.0.1", **settings_given)
    app = create_app(settings, catalog=catalog)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="sms-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the gateway did not start within 30 s", pytrace=False)
        time.sleep(0.05)
    try:
        yield Gateway(f"http://127.0.0.1:{port}", app, catalog, keycloak)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def gateway(keycloak, prefect_server) -> Iterator[Gateway]:
    """The gateway over this session's catalog (SMS_HOME's SQLite, which the worker reads too)."""
    catalog = Catalog()
    catalog.upgrade()
    with serve(keycloak, catalog) as served:
        yield served
    catalog.dispose()
