"""The SMS gateway (``sms gateway``) in front of a private Prefect server, on loopback ports.

``GatewayBed`` starts a Prefect server serving under ``/prefect`` behind a random auth string (UI
on), then ``sms gateway`` pointed at it and at a Keycloak realm. The gateway process shares this
process's SMS_HOME / SMS_DATABASE_URL, so tests see the same catalog.
"""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path

import httpx

from infra.testbed.ports import free_port
from infra.testbed.prefect_server import PrefectServer, prefect_env, venv_binary
from infra.testbed.process import Peer


class GatewayBed(Peer):
    """Prefect (``.prefect``) behind ``sms gateway`` (``.url``), trusting ``issuer``.

    Example::

        with GatewayBed(keycloak.issuer) as bed:
            httpx.get(bed.url + "/prefect/api/flows/filter", headers=...)
    """

    name = "sms-gateway"

    def __init__(
        self, issuer: str, *, timeout: float = 60.0, with_prefect: bool = True, tls: tuple[Path, Path] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """``tls`` (certificate, key): serve HTTPS; ``with_prefect`` False: no Prefect behind it;
        ``settings``: more SMS_* variables for the gateway."""
        super().__init__(timeout=timeout)
        self.settings = settings or {}
        self.issuer = issuer
        self.with_prefect = with_prefect
        self.tls = tls
        self.port = 0
        self.auth_string = secrets.token_urlsafe(24)
        self.prefect: PrefectServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _start(self) -> None:
        assert self.tmp is not None
        self.port = self.port or free_port()
        settings = {
            "SMS_OIDC_ISSUER": self.issuer,
            "SMS_OIDC_AUDIENCE": "sms-gateway",
            "SMS_OIDC_CLIENT_ID": "sms-gateway",
            "SMS_OIDC_CLIENT_SECRET": "sms-gateway-secret",
            "SMS_GATEWAY_HOST": self.host,
            "SMS_GATEWAY_PORT": str(self.port),
            "SMS_GATEWAY_SESSION_SECRET": secrets.token_urlsafe(32),
            # Tests add signing keys to the realm; pick them up without a long wait.
            "SMS_OIDC_JWKS_REFRESH_SECONDS": "1",
            **self.settings,
        }
        if self.tls:
            settings.update(SMS_GATEWAY_TLS_CERT=str(self.tls[0]), SMS_GATEWAY_TLS_KEY=str(self.tls[1]))
        if self.with_prefect:
            self.prefect = PrefectServer(  # UI files copied and migrations on SQLite: slow on a busy machine
                base_path="/prefect", auth_string=self.auth_string, ui_api_url=f"{self.url}/prefect/api", timeout=240.0
            ).start()
            settings.update(self.prefect_settings())
        env = prefect_env(self.tmp / "prefect-home", settings)
        for name in ("SMS_HOME", "SMS_DATABASE_URL"):
            if name in os.environ and name not in self.settings:
                env[name] = os.environ[name]
        self.spawn([venv_binary("sms"), "gateway"], self._healthy, env=env)

    def prefect_settings(self) -> dict[str, str]:
        """What a gateway needs to stand in front of this bed's Prefect: its proxy target, and its own
        Prefect client (host labels, SMS API) talking to the same server. Another
        ``GatewayBed(..., with_prefect=False, settings=bed.prefect_settings())`` shares it."""
        assert self.prefect is not None, "this gateway has no Prefect of its own"
        return {"PREFECT_API_URL": self.prefect.api_url, "PREFECT_API_AUTH_STRING": self.auth_string,
                "SMS_GATEWAY_PREFECT_URL": self.prefect.url, "SMS_GATEWAY_PREFECT_AUTH_STRING": self.auth_string}

    def _healthy(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=2, verify=self.verify).status_code == 200

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client needs to trust this gateway's certificate."""
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    def _after_stop(self) -> None:
        if self.prefect is not None:
            self.prefect.stop()
            self.prefect = None
