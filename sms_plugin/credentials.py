"""The CLI's and SDK's Keycloak login: device-code or password grant against the public client
the gateway names (``GET /auth/config``), a token file in ``$SMS_HOME/login.json`` readable by
its owner only (0600), refreshed with the refresh token when it is about to expire."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sms_plugin import tls
from sms_plugin.errors import InvalidInput, SMSError
from sms_plugin.lazy import lazy_module
from sms_plugin.settings import sms_home

if TYPE_CHECKING:
    import httpx
else:  # loaded when a login talks to the gateway: `sms` reads the stored login without it
    httpx = lazy_module("httpx")

#: Refresh when the access token has fewer seconds than this left.
_REFRESH_MARGIN = 30


@dataclass(frozen=True)
class Provider:
    """Where to log in: the gateway, its realm's token endpoints and the CLI's client id."""

    gateway_url: str
    issuer: str
    client_id: str
    token_endpoint: str
    device_endpoint: str | None
    end_session_endpoint: str | None = None


@dataclass(frozen=True)
class DeviceLogin:
    """A started device-code login: the user opens ``verification_uri`` and types ``user_code``."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_at: float


@dataclass(frozen=True)
class StoredLogin:
    """What ``login.json`` holds."""

    gateway_url: str
    token_endpoint: str
    client_id: str
    username: str
    access_token: str
    expires_at: float
    refresh_token: str | None


def _json(reply: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        body = {}
    if reply.status_code >= 400:
        reason = body.get("error_description") or body.get("error") or body.get("detail") or reply.text[:200]
        raise SMSError(f"{what} failed: {reason}")
    return body


def discover(gateway_url: str) -> Provider:
    """Ask the gateway which realm and client to log in with, and the realm for its endpoints."""
    gateway_url = gateway_url.rstrip("/")
    if not gateway_url.startswith(("http://", "https://")):
        raise InvalidInput(f"the gateway URL must start with http:// or https://, not {gateway_url!r}")
    config = _json(httpx.get(f"{gateway_url}/auth/config", timeout=15, verify=tls.client_context()), "asking the gateway for its login settings")
    metadata = _json(
        httpx.get(f"{config['issuer']}/.well-known/openid-configuration", timeout=15, verify=tls.client_context()), "reading the realm's metadata"
    )
    return Provider(
        gateway_url, config["issuer"], config["cli_client_id"], metadata["token_endpoint"],
        metadata.get("device_authorization_endpoint"), metadata.get("end_session_endpoint"),
    )


def _stored(provider: Provider | StoredLogin, tokens: dict[str, Any], username: str) -> StoredLogin:
    return StoredLogin(
        gateway_url=provider.gateway_url,
        token_endpoint=provider.token_endpoint,
        client_id=provider.client_id,
        username=username,
        access_token=tokens["access_token"],
        expires_at=time.time() + float(tokens.get("expires_in", 60)),
        refresh_token=tokens.get("refresh_token"),
    )


def _username(access_token: str) -> str:
    from joserfc.jws import extract_compact

    claims = json.loads(extract_compact(access_token.encode()).payload)
    return str(claims.get("preferred_username") or claims.get("sub"))


def password_login(provider: Provider, username: str, password: str) -> StoredLogin:
    """Resource-owner password grant (when the realm allows it for the CLI client)."""
    tokens = _json(
        httpx.post(
            provider.token_endpoint,
            data={"grant_type": "password", "client_id": provider.client_id, "username": username,
                  "password": password, "scope": "openid"},
            timeout=30,
            verify=tls.client_context(),
        ),
        "password login",
    )
    return _stored(provider, tokens, username)


def start_device_login(provider: Provider) -> DeviceLogin:
    """Start the device authorization grant."""
    if not provider.device_endpoint:
        raise SMSError("the realm offers no device login; use `sms login --password`")
    body = _json(
        httpx.post(provider.device_endpoint, data={"client_id": provider.client_id, "scope": "openid"}, timeout=30, verify=tls.client_context()),
        "device login",
    )
    return DeviceLogin(
        body["device_code"], body["user_code"], body["verification_uri"], body.get("verification_uri_complete"),
        int(body.get("interval", 5)), time.time() + float(body.get("expires_in", 600)),
    )


def finish_device_login(provider: Provider, device: DeviceLogin) -> StoredLogin:
    """Poll the token endpoint until the user approved the device (or it expired)."""
    interval = device.interval
    while time.time() < device.expires_at:
        reply = httpx.post(
            provider.token_endpoint,
            data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": provider.client_id,
                  "device_code": device.device_code},
            timeout=30,
            verify=tls.client_context(),
        )
        error = reply.json().get("error") if reply.status_code == 400 else None
        if error == "authorization_pending":
            time.sleep(interval)
            continue
        if error == "slow_down":
            interval += 5
            time.sleep(interval)
            continue
        tokens = _json(reply, "device login")
        return _stored(provider, tokens, _username(tokens["access_token"]))
    raise SMSError("the device code expired before it was approved; run `sms login` again")


def login_path() -> Path:
    return sms_home() / "login.json"


def save(login: StoredLogin) -> Path:
    """Write ``login.json`` with mode 0600 (created so, never world-readable in between)."""
    path = login_path()
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(login), handle)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def forget() -> StoredLogin | None:
    """Remove ``login.json``; returns the login it held (None when there was none)."""
    try:
        stored = load()
    except SMSError:
        stored = None
    login_path().unlink(missing_ok=True)
    return stored


def end_session(login: StoredLogin) -> None:
    """End ``login``'s session at Keycloak (its refresh token stops working); SMSError when that
    cannot be done."""
    if not login.refresh_token:
        raise SMSError("the stored login has no refresh token to end")
    try:
        endpoint = discover(login.gateway_url).end_session_endpoint
        if not endpoint:
            raise SMSError("the realm names no end-session endpoint")
        reply = httpx.post(endpoint, data={"client_id": login.client_id, "refresh_token": login.refresh_token}, timeout=30, verify=tls.client_context())
    except httpx.HTTPError as exc:
        raise SMSError(f"the gateway or Keycloak is unreachable ({type(exc).__name__})") from None
    if reply.status_code >= 400:
        _json(reply, "ending the Keycloak session")


def load() -> StoredLogin | None:
    """The stored login, or None."""
    try:
        return StoredLogin(**json.loads(login_path().read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise SMSError(f"{login_path()} is unreadable; run `sms login` again") from exc


def access_token(login: StoredLogin) -> str:
    """A valid access token of ``login``, refreshed (and saved) when about to expire."""
    if login.expires_at - time.time() > _REFRESH_MARGIN:
        return login.access_token
    if not login.refresh_token:
        raise SMSError("the stored login has expired; run `sms login` again")
    reply = httpx.post(
        login.token_endpoint,
        data={"grant_type": "refresh_token", "client_id": login.client_id, "refresh_token": login.refresh_token},
        timeout=30,
        verify=tls.client_context(),
    )
    if reply.status_code >= 400:
        raise SMSError("the stored login has expired; run `sms login` again")
    renewed = _stored(login, reply.json(), login.username)
    save(renewed)
    return renewed.access_token
