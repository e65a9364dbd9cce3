"""The production realm template imported into the test bed's real Keycloak: password grants are
refused for both clients, registration is off, Keycloak generated the client secret, and
brute-force protection is on (the file's own properties: tests/unit/test_realms.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.unit.test_realms import TEMPLATE

pytestmark = pytest.mark.integration


def _admin(keycloak, realm: str) -> httpx.Client:
    """An admin API client on ``realm`` (a fresh token: the master realm's last a minute)."""
    admin = keycloak.admin()
    admin.base_url = f"{keycloak.url}/admin/realms/{realm}"
    return admin


@pytest.fixture(scope="module")
def imported(keycloak) -> Iterator[tuple[str, str]]:
    """The template as realm ``sms-template-<hex>`` (its issuer and name), with one user.
    The test bed serves plain HTTP on loopback, so ``sslRequired: all`` becomes ``external``
    (HTTPS for every address that is not local), or Keycloak would refuse every request at once."""
    realm: dict[str, Any] = json.loads(TEMPLATE.read_text())
    name = realm["realm"] = f"sms-template-{uuid.uuid4().hex[:6]}"
    realm["sslRequired"] = "external"
    with keycloak.admin() as admin:
        admin.post(f"{keycloak.url}/admin/realms", json=realm).raise_for_status()
    with _admin(keycloak, name) as admin:
        admin.post("/users", json={
            "username": "olga", "enabled": True, "email": "olga@sms.test", "emailVerified": True,
            "firstName": "Olga", "lastName": "Test",
            "credentials": [{"type": "password", "value": "olga-long-password-1", "temporary": False}],
        }).raise_for_status()
    yield f"{keycloak.url}/realms/{name}", name
    with _admin(keycloak, name) as admin:
        admin.delete("").raise_for_status()


def _client_secret(admin: httpx.Client, client_id: str) -> str:
    [client] = admin.get("/clients", params={"clientId": client_id}).raise_for_status().json()
    return str(admin.get(f"/clients/{client['id']}/client-secret").raise_for_status().json()["value"])


def test_the_template_refuses_password_grants(keycloak, imported) -> None:
    issuer, name = imported
    with _admin(keycloak, name) as admin:
        secret = _client_secret(admin, "sms-gateway")
    assert len(secret) >= 20 and secret not in TEMPLATE.read_text()  # generated at import, not shipped
    for client in ({"client_id": "sms-cli"}, {"client_id": "sms-gateway", "client_secret": secret}):
        reply = httpx.post(f"{issuer}/protocol/openid-connect/token", timeout=30, data={
            "grant_type": "password", "username": "olga", "password": "olga-long-password-1", **client,
        })
        assert reply.status_code in (400, 401), reply.text
        assert reply.json()["error"] == "unauthorized_client", reply.text
        assert "access_token" not in reply.json()


def test_the_template_has_no_registration_and_guards_against_guessing(keycloak, imported) -> None:
    issuer, name = imported
    page = httpx.get(f"{issuer}/protocol/openid-connect/registrations", timeout=30, params={
        "client_id": "sms-gateway", "response_type": "code", "scope": "openid",
        "redirect_uri": "https://sms.example.com/auth/callback",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
    })
    assert "kc-register-form" not in page.text
    assert "Registration not allowed" in page.text or page.status_code >= 400, page.text[:500]
    with _admin(keycloak, name) as admin:
        settings = admin.get("").raise_for_status().json()
        users = [user["username"] for user in admin.get("/users").raise_for_status().json()]
    assert settings["registrationAllowed"] is False and settings["bruteForceProtected"] is True
    assert users == ["olga"]  # the template brought none
