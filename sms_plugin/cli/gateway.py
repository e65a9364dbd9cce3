"""``sms gateway`` (serve the gateway), ``sms login`` (get a token for the CLI and SDK) and ``sms logout``."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sms_plugin.cli.asking import ask
from sms_plugin.errors import SMSError
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    from sms_plugin import credentials
else:  # loaded when `sms login` or `sms logout` runs (it imports httpx)
    credentials = lazy_module("sms_plugin.credentials")

out = Console()


def gateway(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env SMS_GATEWAY_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env SMS_GATEWAY_PORT, default 8443].")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS [env SMS_GATEWAY_TLS_CERT].")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert [env SMS_GATEWAY_TLS_KEY].")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Serve plain HTTP beyond loopback [env SMS_GATEWAY_ALLOW_PLAIN_HTTP].")
    ] = False,
) -> None:
    """Serve the gateway: Keycloak login, the SMS REST API, webhooks and Prefect under /prefect/.

    Settings come from SMS_OIDC_* and SMS_GATEWAY_* variables (docs/gateway.md)."""
    import uvicorn

    from sms_plugin.catalog import Catalog
    from sms_plugin.gateway.app import create_app
    from sms_plugin.gateway.config import load_settings

    given = {k: v for k, v in {"host": host, "port": port, "tls_cert": tls_cert, "tls_key": tls_key}.items() if v is not None}
    if insecure_http:
        given["allow_plain_http"] = True
    settings = load_settings(**given)
    out.print(f"SMS gateway on {settings.base_url} (issuer {settings.oidc_issuer}, Prefect {settings.prefect_url or 'not proxied'})")
    catalog = Catalog()
    catalog.upgrade()
    uvicorn.run(
        create_app(settings, catalog=catalog),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="info",
        proxy_headers=False,
    )


def login(
    gateway_url: Annotated[str, typer.Option("--gateway", envvar="SMS_GATEWAY_URL", help="The gateway's URL.")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="With --password: the user name.")] = None,
    password: Annotated[bool, typer.Option("--password", help="Password grant (asks for the password) instead of the device code.")] = False,
    open_browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the verification page.")] = False,
) -> None:
    """Log in with Keycloak; the token is kept in $SMS_HOME/login.json (mode 0600) and refreshed."""
    provider = credentials.discover(gateway_url)
    if password:
        name = username or ask("User name")
        secret = ask(f"Password for {name}", hide_input=True)
        stored = credentials.password_login(provider, name, secret)
    else:
        device = credentials.start_device_login(provider)
        out.print(f"Open {device.verification_uri} and enter the code [bold]{device.user_code}[/]")
        if open_browser:
            webbrowser.open(device.verification_uri_complete or device.verification_uri)
        stored = credentials.finish_device_login(provider, device)
    path = credentials.save(stored)
    out.print(f"Logged in to {gateway_url} as {stored.username}; token in {path}")
    out.print("Every sms command now goes through the gateway; `sms logout` returns to the local catalog.")


def logout() -> None:
    """End the login's Keycloak session and forget the stored token: sms commands use the local
    catalog and Prefect again."""
    stored = credentials.forget()
    if stored is None:
        out.print("Not logged in; sms commands use the local catalog.")
        return
    try:
        credentials.end_session(stored)
    except SMSError as exc:
        out.print(f"[yellow]The Keycloak session could not be ended ({exc}); it ends when it expires.[/]")
    out.print(f"Logged out of {stored.gateway_url} ({stored.username}); sms commands use the local catalog again.")
