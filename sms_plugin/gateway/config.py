"""The gateway's settings, read from the environment (docs/gateway.md#settings)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_plugin.errors import InvalidInput
from sms_plugin.listening import plain_http_refusal
from sms_plugin.settings import FIELD_NAMES_UNREAD

#: Longest interval between two re-reads of a browser session's roles (the issue's 5 minutes).
MAX_SESSION_RECHECK_SECONDS = 300


class GatewaySettings(BaseSettings):
    """Where the gateway listens, whom it trusts (Keycloak) and what it fronts (Prefect)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_prefix=FIELD_NAMES_UNREAD)

    #: The realm's issuer URL, e.g. ``https://kc.example/realms/sms``.
    oidc_issuer: str = Field(validation_alias="SMS_OIDC_ISSUER")
    #: The ``aud`` every access token must carry.
    oidc_audience: str = Field("sms-gateway", validation_alias="SMS_OIDC_AUDIENCE")
    #: The confidential client of the browser login (code + PKCE).
    oidc_client_id: str = Field("sms-gateway", validation_alias="SMS_OIDC_CLIENT_ID")
    oidc_client_secret: SecretStr | None = Field(None, validation_alias="SMS_OIDC_CLIENT_SECRET")
    #: The public client ``sms login`` uses (device code / password grant).
    oidc_cli_client_id: str = Field("sms-cli", validation_alias="SMS_OIDC_CLI_CLIENT_ID")
    #: Clients whose access tokens are accepted (``azp``); default: the two above.
    oidc_allowed_clients: list[str] = Field([], validation_alias="SMS_OIDC_ALLOWED_CLIENTS")
    #: Signature algorithms accepted on tokens (asymmetric only).
    oidc_algorithms: list[str] = Field(
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"],
        validation_alias="SMS_OIDC_ALGORITHMS",
    )
    #: Seconds of clock skew tolerated on exp/nbf/iat.
    oidc_leeway: int = Field(30, validation_alias="SMS_OIDC_LEEWAY")
    #: Minimum seconds between two JWKS fetches triggered by an unknown ``kid``.
    jwks_refresh_seconds: float = Field(10.0, validation_alias="SMS_OIDC_JWKS_REFRESH_SECONDS")

    host: str = Field("127.0.0.1", validation_alias="SMS_GATEWAY_HOST")
    port: int = Field(8443, validation_alias="SMS_GATEWAY_PORT")
    #: How browsers reach the gateway (login redirect URI, Prefect UI API URL); default from host/port.
    public_url: str | None = Field(None, validation_alias="SMS_GATEWAY_PUBLIC_URL")
    tls_cert: Path | None = Field(None, validation_alias="SMS_GATEWAY_TLS_CERT")
    tls_key: Path | None = Field(None, validation_alias="SMS_GATEWAY_TLS_KEY")
    #: Signs the session cookie; random per process when unset (sessions end with a restart).
    session_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        validation_alias="SMS_GATEWAY_SESSION_SECRET",
    )
    session_seconds: int = Field(3600, validation_alias="SMS_GATEWAY_SESSION_SECONDS")
    #: Seconds between two re-reads of a session's roles at Keycloak (refresh grant); at most 300.
    session_recheck_seconds: float = Field(
        MAX_SESSION_RECHECK_SECONDS, gt=0, le=MAX_SESSION_RECHECK_SECONDS,
        validation_alias="SMS_GATEWAY_SESSION_RECHECK_SECONDS",
    )
    #: Other origins (``https://host[:port]``) whose pages may open cookie-authenticated websockets.
    allowed_origins: list[str] = Field([], validation_alias="SMS_GATEWAY_ALLOWED_ORIGINS")
    #: Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy, say).
    allow_plain_http: bool = Field(False, validation_alias="SMS_GATEWAY_ALLOW_PLAIN_HTTP")

    #: The Prefect server behind the gateway (loopback), serving under ``/prefect``.
    prefect_url: str | None = Field(None, validation_alias="SMS_GATEWAY_PREFECT_URL")
    #: Prefect's PREFECT_SERVER_API_AUTH_STRING, known to the gateway only.
    prefect_auth_string: SecretStr | None = Field(
        None, validation_alias="SMS_GATEWAY_PREFECT_AUTH_STRING"
    )

    #: The Prometheus that scrapes ``sms exporter``; the monitoring overview queries it (unset: 503).
    prometheus_url: str | None = Field(None, validation_alias="SMS_PROMETHEUS_URL")
    #: Seconds the monitoring overview's upstream answers are shared by every caller; 0: not shared.
    monitor_cache_seconds: float = Field(10.0, ge=0, le=3600, validation_alias="SMS_MONITOR_CACHE_SECONDS")
    #: Monitoring requests one user may make, e.g. ``60/min`` (units ``s``, ``min``, ``h``).
    monitor_rate: str = Field("60/min", pattern=r"^[1-9][0-9]{0,5}/(s|min|h)$", validation_alias="SMS_MONITOR_RATE")

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both SMS_GATEWAY_TLS_CERT and SMS_GATEWAY_TLS_KEY, or neither")
        unsafe = {a for a in self.oidc_algorithms if a.upper() == "NONE" or a.upper().startswith("HS")}
        if unsafe:
            raise ValueError(f"SMS_OIDC_ALGORITHMS must not contain {sorted(unsafe)}")
        self.oidc_issuer = self.oidc_issuer.rstrip("/")
        self.oidc_allowed_clients = self.oidc_allowed_clients or [self.oidc_client_id, self.oidc_cli_client_id]
        refusal = plain_http_refusal(
            "the gateway", self.host, tls=self.tls, allowed=self.allow_plain_http,
            allowed_by="SMS_GATEWAY_ALLOW_PLAIN_HTTP=1 (--insecure-http)",
            remedy="give it --tls-cert/--tls-key, or keep it on 127.0.0.1 behind a TLS proxy, "
            "or allow clear text with SMS_GATEWAY_ALLOW_PLAIN_HTTP=1 (--insecure-http)",
        )
        if refusal:
            raise ValueError(refusal)
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def base_url(self) -> str:
        """The gateway's public base URL without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def load_settings(**given: object) -> GatewaySettings:
    """Settings from the environment, ``given`` values first; a bad or missing one is an
    :class:`InvalidInput` naming it."""
    try:
        return GatewaySettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].replace("Value error, ", "")
            for e in exc.errors()
        )
        raise InvalidInput(f"gateway settings: {problems} (see docs/gateway.md)") from None
