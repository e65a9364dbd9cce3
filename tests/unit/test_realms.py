"""The shipped Keycloak realms: a demo realm that says so, and a production template without
users, static secrets, registration or password grants (docs/gateway.md#keycloak)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REALMS = Path(__file__).resolve().parents[2] / "infra" / "keycloak"
TEMPLATE = REALMS / "sms-realm-production-template.json"
DEMO = REALMS / "sms-demo-realm.json"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def _client(realm: dict[str, Any], client_id: str) -> dict[str, Any]:
    return next(c for c in realm["clients"] if c["clientId"] == client_id)


def test_the_demo_realm_is_named_a_demo() -> None:
    demo = json.loads(DEMO.read_text())
    assert "DEMO" in demo["displayName"] and "not for production" in demo["displayName"]
    assert "production" in demo["attributes"]["description"] and TEMPLATE.name in demo["attributes"]["description"]


def test_the_production_template_has_no_users_and_no_static_secrets(template) -> None:
    assert not template.get("users")
    assert all("secret" not in client for client in template["clients"])
    assert not any(c.get("serviceAccountsEnabled") for c in template["clients"])  # machine callers get their own client


def test_the_production_template_closes_self_service_and_password_grants(template) -> None:
    assert template["registrationAllowed"] is False
    assert all(client["directAccessGrantsEnabled"] is False for client in template["clients"])
    assert all(client["implicitFlowEnabled"] is False for client in template["clients"])
    assert template["sslRequired"] == "all"


def test_the_production_template_protects_against_password_guessing(template) -> None:
    assert template["bruteForceProtected"] is True and template["permanentLockout"] is False
    assert 1 <= template["failureFactor"] <= 10 and template["maxFailureWaitSeconds"] >= 300
    assert "length(" in template["passwordPolicy"]


def test_the_production_template_has_short_lived_tokens(template) -> None:
    assert template["accessTokenLifespan"] <= 300  # roles in bearer tokens are at most 5 minutes old
    assert template["accessCodeLifespan"] <= 60
    assert template["ssoSessionIdleTimeout"] <= 3600 and template["ssoSessionMaxLifespan"] <= 86400


def test_the_production_template_requires_pkce_for_the_browser_client(template) -> None:
    gateway = _client(template, "sms-gateway")
    assert gateway["publicClient"] is False and gateway["standardFlowEnabled"] is True
    assert gateway["attributes"]["pkce.code.challenge.method"] == "S256"
    assert all(uri.startswith("https://") and "*" not in uri for uri in gateway["redirectUris"])
    cli = _client(template, "sms-cli")
    assert cli["publicClient"] is True and cli["standardFlowEnabled"] is False
    assert cli["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"


def test_both_realms_define_the_same_roles_and_audience(template) -> None:
    demo = json.loads(DEMO.read_text())
    assert template["roles"] == demo["roles"]
    for client in template["clients"]:
        audience = next(m for m in client["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper")
        assert audience["config"]["included.client.audience"] == "sms-gateway"
