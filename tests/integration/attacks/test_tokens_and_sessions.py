"""Attacks on tokens and sessions, against real Keycloak tokens and the real gateway (issue 12):
ID tokens, refresh tokens and other clients' tokens as bearer; a session cookie copied before
logout; a role removed or a user disabled in Keycloak; a cookie websocket from a foreign page; a
plain-HTTP gateway beyond loopback. Each asserts the refusal and that nothing happened."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from contextlib import closing
from http.cookiejar import CookieJar
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import select

from infra.testbed.gateway import GatewayBed
from infra.testbed.ports import free_port
from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import AccessRule, GatewaySession
from tests.integration.test_gateway_auth import Browser, LoopbackIsSecure, browser_login, login_form

pytestmark = pytest.mark.integration
#: The gateway re-reads a session's roles this often here (300 s in production at most).
RECHECK_SECONDS = 3


@pytest.fixture
def bed(gateway_bed) -> GatewayBed:
    """The test bed's gateway, in front of its own Prefect."""
    return gateway_bed


@pytest.fixture(scope="module")
def rechecking(keycloak) -> Iterator[GatewayBed]:
    """A gateway (no Prefect behind it) that re-reads session roles every few seconds."""
    settings = {"SMS_GATEWAY_SESSION_RECHECK_SECONDS": str(RECHECK_SECONDS)}
    with GatewayBed(keycloak.issuer, with_prefect=False, settings=settings) as peer:
        yield peer


def _grant(keycloak, username: str, client_id: str = "sms-gateway", secret: str | None = "sms-gateway-secret") -> dict:
    """Every token of a password grant (access, ID, refresh) for ``username``."""
    form = {"grant_type": "password", "client_id": client_id, "username": username,
            "password": f"{username}-pw", "scope": "openid"}
    if secret:
        form["client_secret"] = secret
    reply = httpx.post(f"{keycloak.issuer}/protocol/openid-connect/token", data=form, timeout=30)
    reply.raise_for_status()
    return reply.json()


def _create_variable(bed: GatewayBed, name: str, **request: object) -> httpx.Response:
    return httpx.post(f"{bed.url}/prefect/api/variables/", json={"name": name, "value": "x"}, timeout=30, **request)


def _variable_exists(bed: GatewayBed, keycloak, name: str) -> bool:
    """Asked as the admin, with an access token: does the variable exist in Prefect?"""
    admin = {"Authorization": f"Bearer {keycloak.token('adam')}"}
    reply = httpx.get(f"{bed.url}/prefect/api/variables/name/{name}", headers=admin, timeout=30)
    assert reply.status_code in (200, 404), reply.text
    return reply.status_code == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_id_token_is_not_a_bearer_token(bed, keycloak) -> None:
    tokens = _grant(keycloak, "adam")
    name = f"by_id_token_{uuid.uuid4().hex[:8]}"
    refused = _create_variable(bed, name, headers=_bearer(tokens["id_token"]))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "not authenticated: not an access token (typ 'ID'): send the access token"
    assert not _variable_exists(bed, keycloak, name)
    assert _create_variable(bed, name, headers=_bearer(tokens["access_token"])).status_code == 201  # the control


def test_a_refresh_token_is_not_a_bearer_token(bed, keycloak) -> None:
    name = f"by_refresh_token_{uuid.uuid4().hex[:8]}"
    refused = _create_variable(bed, name, headers=_bearer(_grant(keycloak, "adam")["refresh_token"]))
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("not authenticated: ")
    assert not _variable_exists(bed, keycloak, name)


@pytest.fixture(scope="module")
def other_client(keycloak) -> Iterator[tuple[str, str]]:
    """Another application of the realm whose tokens even carry ``aud: sms-gateway``: only its
    ``azp`` tells them apart from SMS's own."""
    client_id, secret = f"other-app-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with keycloak.admin() as admin:
        created = admin.post("/clients", json={
            "clientId": client_id, "secret": secret, "publicClient": False, "directAccessGrantsEnabled": True,
            "protocolMappers": [{
                "name": "aud", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": "sms-gateway", "access.token.claim": "true"},
            }],
        }).raise_for_status()
    yield client_id, secret
    with keycloak.admin() as admin:  # a fresh token: the master realm's last a minute
        admin.delete(f"/clients/{created.headers['location'].rsplit('/', 1)[1]}")


def test_a_token_of_another_client_is_refused(bed, keycloak, other_client) -> None:
    token = _grant(keycloak, "adam", *other_client)["access_token"]
    name = f"by_other_client_{uuid.uuid4().hex[:8]}"
    refused = _create_variable(bed, name, headers=_bearer(token))
    assert refused.status_code == 401
    assert f"token issued to client '{other_client[0]}', which is not one of SMS's clients" in refused.json()["detail"]
    assert not _variable_exists(bed, keycloak, name)


def _rows(model: Any, condition: Any) -> int:
    """How many rows of ``model`` match ``condition`` (the test bed's gateways share this SMS_HOME)."""
    catalog = Catalog()
    try:
        with catalog.session() as s:
            return len(s.scalars(select(model).where(condition)).all())
    finally:
        catalog.dispose()


def _stored_sessions(cookie: str) -> int:
    """How many catalog rows hold the session of this cookie value."""
    return _rows(GatewaySession, GatewaySession.id == hashlib.sha256(cookie.encode()).hexdigest())


def _logout(browser: httpx.Client, url: str) -> None:
    page = browser.get(f"{url}/auth/logout")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    assert browser.post(f"{url}/auth/logout", data={"csrf_token": html.unescape(token.group(1))}).status_code == 303


def test_a_session_cookie_copied_before_logout_is_useless_after_it(bed, keycloak) -> None:
    with closing(browser_login(bed.url, "adam")) as browser:
        cookie = browser.cookies.get("sms_session")
        assert cookie and "." not in cookie and len(cookie) < 64  # an opaque id, no token inside
        assert _stored_sessions(cookie) == 1
        copied = {"Cookie": f"sms_session={cookie}"}
        assert httpx.get(f"{bed.url}/auth/me", headers=copied, timeout=30).json()["username"] == "adam"
        _logout(browser, bed.url)
    assert _stored_sessions(cookie) == 0
    me = httpx.get(f"{bed.url}/auth/me", headers=copied, timeout=30)
    assert me.status_code == 401 and "log in" in me.json()["detail"]
    name = f"after_logout_{uuid.uuid4().hex[:8]}"
    assert _create_variable(bed, name, headers=copied).status_code == 401
    assert not _variable_exists(bed, keycloak, name)
    assert "username" not in httpx.get(f"{bed.url}/auth/me", headers=copied, timeout=30).text


def test_login_gives_a_new_session_id(bed) -> None:
    """The session of the login round trip (authlib's state) is replaced at login: an id planted
    in a victim's browser beforehand (session fixation) never becomes a logged-in session."""
    with closing(Browser(timeout=30, follow_redirects=False, cookies=CookieJar(LoopbackIsSecure()))) as browser:
        to_keycloak = browser.get(f"{bed.url}/auth/login", params={"next": "/auth/me"})
        before = browser.cookies.get("sms_session")
        assert before and _stored_sessions(before) == 1
        back = login_form(browser, browser.get(to_keycloak.headers["location"]), "viola")
        assert browser.get(back.headers["location"]).status_code == 303
        after = browser.cookies.get("sms_session")
    assert after and after != before
    assert _stored_sessions(before) == 0 and _stored_sessions(after) == 1
    planted = httpx.get(f"{bed.url}/auth/me", headers={"Cookie": f"sms_session={before}"}, timeout=30)
    assert planted.status_code == 401


@pytest.fixture
def realm_user(keycloak) -> Iterator[tuple[str, str]]:
    """A fresh realm user with sms-admin (name, id); its password is name + "-pw"."""
    name = f"rita-{uuid.uuid4().hex[:6]}"
    user_id = keycloak.add_user(name, ("sms-admin",))
    yield name, user_id
    with keycloak.admin() as admin:
        admin.delete(f"/users/{user_id}")


def _refused_within(bed: GatewayBed, copied: dict[str, str], seconds: float) -> tuple[float, httpx.Response]:
    """Poll /auth/me with the session until it is refused; (seconds it took, the refusal)."""
    started = time.monotonic()
    while True:
        me = httpx.get(f"{bed.url}/auth/me", headers=copied, timeout=30)
        if me.status_code != 200 or time.monotonic() - started > seconds:
            return time.monotonic() - started, me
        time.sleep(0.5)


def _add_rule(bed: GatewayBed, headers: dict[str, str], subject: str, description: str) -> httpx.Response:
    """An admin-only change through the REST API: a (harmless) access rule for ``subject``."""
    rule = {"subject_kind": "user", "subject": subject, "actions": ["read"], "description": description}
    return httpx.post(f"{bed.url}/api/v1/access-rules", json=rule, headers=headers, timeout=30)


@pytest.mark.parametrize("change", ["role removed", "user disabled"])
def test_a_change_in_keycloak_ends_the_session_within_the_recheck_period(rechecking, keycloak, realm_user, change) -> None:
    name, user_id = realm_user
    with closing(browser_login(rechecking.url, name)) as browser:
        copied = {"Cookie": f"sms_session={browser.cookies.get('sms_session')}"}
        before = f"before {uuid.uuid4()}"
        assert _add_rule(rechecking, copied, name, before).status_code == 201, "the control"
        with keycloak.admin() as admin:
            if change == "role removed":
                role = admin.get("/roles/sms-admin").raise_for_status().json()
                admin.request("DELETE", f"/users/{user_id}/role-mappings/realm", json=[role]).raise_for_status()
            else:
                admin.put(f"/users/{user_id}", json={"enabled": False}).raise_for_status()
        took, refused = _refused_within(rechecking, copied, RECHECK_SECONDS + 10)
    assert refused.status_code == 401, refused.text
    assert took <= RECHECK_SECONDS + 5, took
    reason = "your roles changed" if change == "role removed" else "the session ended at the identity provider"
    assert reason in refused.json()["detail"]
    after = f"after {uuid.uuid4()}"
    assert _add_rule(rechecking, copied, name, after).status_code == 401  # the session is gone for good
    assert _rows(AccessRule, AccessRule.description == before) == 1
    assert _rows(AccessRule, AccessRule.description == after) == 0


def _ws_url(bed: GatewayBed, path: str) -> str:
    return bed.url.replace("http://", "ws://") + path


async def test_a_cookie_websocket_from_a_foreign_page_is_refused(bed) -> None:
    with closing(browser_login(bed.url, "viola")) as browser:
        cookie = {"Cookie": f"sms_session={browser.cookies.get('sms_session')}"}
        for origin in ("https://evil.example", bed.url.replace("127.0.0.1", "localhost"), None):
            headers = {**cookie, **({"Origin": origin} if origin else {})}
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(
                    _ws_url(bed, "/prefect/api/events/out"), additional_headers=headers,
                    subprotocols=[websockets.Subprotocol("prefect")], open_timeout=30,
                ):
                    pass  # never reached: nothing is relayed
            assert refused.value.response.status_code == 403, origin
        async with websockets.connect(  # the control: the gateway's own page
            _ws_url(bed, "/prefect/api/events/out"), additional_headers={**cookie, "Origin": bed.url},
            subprotocols=[websockets.Subprotocol("prefect")], open_timeout=30,
        ) as socket:
            await socket.send(json.dumps({"type": "auth", "token": None}))
            assert json.loads(await socket.recv()) == {"type": "auth_success"}


def _sms(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = str(Path(sys.executable).with_name("sms"))
    return subprocess.run([executable, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_plain_http_gateway_beyond_loopback_refuses_to_start(keycloak, how) -> None:
    port = free_port()
    env = {**os.environ, "SMS_OIDC_ISSUER": keycloak.issuer, "SMS_GATEWAY_PORT": str(port), "COLUMNS": "300"}
    if how == "flag":
        done = _sms("gateway", "--host", "0.0.0.0", env=env)
    else:
        done = _sms("gateway", env={**env, "SMS_GATEWAY_HOST": "0.0.0.0"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "will not serve plain HTTP on 0.0.0.0" in done.stderr and "SMS_GATEWAY_ALLOW_PLAIN_HTTP=1" in done.stderr
    with pytest.raises(httpx.ConnectError):  # nothing listens
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_a_plain_http_exporter_beyond_loopback_refuses_to_start() -> None:
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "COLUMNS": "300"}
    done = _sms("exporter", "--address", "0.0.0.0", "--port", str(port), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "will not serve plain HTTP on 0.0.0.0" in done.stderr and "SMS_EXPORTER_ALLOW_PLAIN_HTTP=1" in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
