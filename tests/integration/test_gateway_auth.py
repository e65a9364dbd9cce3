"""Gateway authentication against a real Keycloak: the browser login (code + PKCE) driven through
Keycloak's own login form, the session cookie and CSRF, and forged JWTs that must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from infra.testbed.gateway import GatewayBed
from sms_plugin.gateway.auth import AuthError, TokenVerifier
from sms_plugin.gateway.config import GatewaySettings

pytestmark = pytest.mark.integration


class LoopbackIsSecure(DefaultCookiePolicy):
    """Send cookies as browsers do: http://127.0.0.1 is a secure context (Keycloak's login cookies
    are ``Secure``), and ``Version=1`` cookies are sent like any other."""

    def return_ok_version(self, cookie: Cookie, request: Any) -> bool:
        return True

    def return_ok_secure(self, cookie: Cookie, request: Any) -> bool:
        return not cookie.secure or request.type == "https" or request.host.split(":")[0] == "127.0.0.1"


class Browser(httpx.Client):
    """An httpx client whose requests use its own cookie jar and policy (httpx copies cookies
    into a jar with the default policy for each request otherwise)."""

    def _merge_cookies(self, cookies: Any = None) -> Any:
        assert cookies is None
        return self.cookies.jar

    def follow(self, reply: httpx.Response, until: str = "") -> httpx.Response:
        """Follow redirects by hand (httpx's own redirects would bypass the cookie policy),
        stopping at a location that starts with ``until``."""
        while reply.is_redirect and not (until and reply.headers["location"].startswith(until)):
            reply = self.get(httpx.URL(str(reply.url)).join(reply.headers["location"]))
        return reply


def login_form(browser: Browser, page: httpx.Response, username: str) -> httpx.Response:
    """Fill in Keycloak's login form on ``page`` as ``username``; returns Keycloak's answer."""
    text = " ".join(html.unescape(re.sub(r"<script.*?</script>|<[^>]+>", " ", page.text, flags=re.S)).split())
    assert page.status_code == 200, (page.status_code, text[-300:])  # Keycloak's page says why
    action = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
    assert action, "Keycloak's login form not found"
    return browser.post(
        html.unescape(action.group(1)), data={"username": username, "password": f"{username}-pw", "credentialId": ""}
    )


def browser_login(gateway_url: str, username: str, next_path: str = "/auth/me") -> httpx.Client:
    """Log in like a browser: gateway → Keycloak's form → credentials → callback. Returns the
    client holding the gateway's session cookie."""
    client = Browser(timeout=30, follow_redirects=False, cookies=CookieJar(LoopbackIsSecure()))
    to_keycloak = client.get(f"{gateway_url}/auth/login", params={"next": next_path})
    assert to_keycloak.status_code == 302, to_keycloak.text
    query = parse_qs(urlsplit(to_keycloak.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0], query
    back = login_form(client, client.get(to_keycloak.headers["location"]), username)
    assert back.status_code == 302, back.text[:500]
    assert back.headers["location"].startswith(f"{gateway_url}/auth/callback?")
    done = client.get(back.headers["location"])
    assert done.status_code == 303, done.text
    assert done.headers["location"] == next_path
    cookie = next(h for h in done.headers.get_list("set-cookie") if h.startswith("sms_session="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    return client


def test_browser_login_then_allowed_and_forbidden_action(gateway_bed) -> None:
    with closing(browser_login(gateway_bed.url, "viola")) as browser:
        me = browser.get(f"{gateway_bed.url}/auth/me")
        assert me.status_code == 200 and me.json()["username"] == "viola"
        assert me.json()["roles"] == ["sms-viewer"]
        # Allowed: a viewer reads Prefect through the gateway.
        flows = browser.post(f"{gateway_bed.url}/prefect/api/flows/filter", json={})
        assert flows.status_code == 200, flows.text
        # Forbidden: a viewer may not create a Prefect variable; the reason says why.
        denied = browser.post(f"{gateway_bed.url}/prefect/api/variables/", json={"name": "v1", "value": "x"})
        assert denied.status_code == 403
        assert "sms-admin" in denied.json()["detail"]


def test_admin_browser_session_may_change_prefect(gateway_bed) -> None:
    with closing(browser_login(gateway_bed.url, "adam")) as browser:
        created = browser.post(f"{gateway_bed.url}/prefect/api/variables/", json={"name": "by_adam", "value": "x"})
        assert created.status_code == 201, created.text


def test_session_form_posts_need_the_csrf_token_and_logout_ends_the_session(gateway_bed) -> None:
    with closing(browser_login(gateway_bed.url, "otto")) as browser:
        # A form post (what a foreign page could send) without the token is refused.
        assert browser.post(f"{gateway_bed.url}/auth/logout", data={}).status_code == 403
        assert browser.post(f"{gateway_bed.url}/auth/logout", data={"csrf_token": "guess"}).status_code == 403
        # A cross-origin state change is refused even with JSON.
        foreign = browser.post(
            f"{gateway_bed.url}/prefect/api/flows/filter", json={}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        page = browser.get(f"{gateway_bed.url}/auth/logout")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        out = browser.post(f"{gateway_bed.url}/auth/logout", data={"csrf_token": html.unescape(token)})
        assert out.status_code == 303
        assert "/protocol/openid-connect/logout" in out.headers["location"]
        assert browser.get(f"{gateway_bed.url}/auth/me").status_code == 401


def test_home_page_is_the_console_and_registration_goes_to_keycloak(gateway_bed, keycloak) -> None:
    page = httpx.get(f"{gateway_bed.url}/", timeout=10)  # its login and register buttons: tests/integration/test_console_e2e.py
    assert page.status_code == 200 and '<div id="root">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    register = httpx.get(f"{gateway_bed.url}/auth/register", timeout=10)
    assert register.status_code == 302
    assert register.headers["location"].startswith(keycloak.issuer)
    assert "prompt=create" in register.headers["location"]
    form = httpx.get(register.headers["location"], timeout=30)
    assert form.status_code == 200 and "kc-register-form" in form.text


def test_without_credentials_the_answer_is_a_clear_401(gateway_bed) -> None:
    reply = httpx.get(f"{gateway_bed.url}/auth/me", timeout=10)
    assert reply.status_code == 401
    assert "log in" in reply.json()["detail"]
    assert reply.headers["www-authenticate"].startswith("Bearer")
    basic = httpx.get(f"{gateway_bed.url}/auth/me", headers={"Authorization": "Basic eDp5"}, timeout=10)
    assert basic.status_code == 401 and "Bearer" in basic.json()["detail"]


def test_password_and_service_account_tokens_work_as_bearer(gateway_bed, keycloak) -> None:
    token = keycloak.token("paula")
    me = httpx.get(f"{gateway_bed.url}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert me == {"subject": me["subject"], "username": "paula", "roles": ["sms-operator"], "groups": ["team-payments"]}
    service = httpx.post(
        f"{keycloak.issuer}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": "sms-gateway", "client_secret": "sms-gateway-secret"},
        timeout=30,
    ).json()["access_token"]
    me = httpx.get(f"{gateway_bed.url}/auth/me", headers={"Authorization": f"Bearer {service}"}, timeout=10).json()
    assert me["username"] == "sms-gateway" and "sms-operator" in me["roles"]


# ------------------------------------------------------------------ forged tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(keycloak, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": keycloak.issuer, "aud": "sms-gateway", "sub": "forged-1", "preferred_username": "mallory",
        "typ": "Bearer", "azp": "sms-gateway",
        "iat": now, "exp": now + 300, "realm_access": {"roles": ["sms-admin"]},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def realm_key(keycloak) -> RSAKey:
    """Our own RSA key, added to the realm's keys: tokens we sign with it pass the signature
    check, so each attack below is refused for the claim it breaks and nothing else."""
    key = RSAKey.generate_key(2048, private=True)
    pem = key.as_pem(private=True).decode()
    kid = keycloak.add_signing_key(pem)
    return RSAKey.import_key(pem, parameters={"kid": kid})


def _sign(key: RSAKey, claims: dict[str, Any], alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key)


def _status(gateway_bed, token: str) -> tuple[int, str]:
    reply = httpx.get(f"{gateway_bed.url}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return reply.status_code, reply.json().get("detail", "") if reply.status_code != 200 else reply.json()["username"]


def _accepted_eventually(gateway_bed, token: str) -> tuple[int, str]:
    """The gateway refetches the JWKS at most once per second (SMS_OIDC_JWKS_REFRESH_SECONDS=1)."""
    deadline = time.monotonic() + 10
    while True:
        status = _status(gateway_bed, token)
        if status[0] == 200 or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_a_correctly_forged_token_with_a_realm_key_is_accepted(gateway_bed, keycloak, realm_key) -> None:
    """The control for the attacks below: with every claim right, the forged token passes."""
    assert _accepted_eventually(gateway_bed, _sign(realm_key, _claims(keycloak))) == (200, "mallory")


@pytest.mark.parametrize(
    ("attack", "changes", "reason"),
    [  # times relative to when the test runs (a long suite outlives anything fixed at collection)
        ("wrong issuer", lambda now: {"iss": "http://127.0.0.1:1/realms/sms"}, "iss"),
        ("wrong audience", lambda now: {"aud": "someone-else"}, "aud"),
        ("expired", lambda now: {"exp": now - 120, "iat": now - 600}, "expired"),
        ("not yet valid", lambda now: {"nbf": now + 600}, "not yet valid"),
        ("no expiry", lambda now: {"exp": None}, "exp"),
        ("an ID token", lambda now: {"typ": "ID"}, "not an access token (typ 'ID')"),
        ("no token type", lambda now: {"typ": None}, "not an access token (typ None)"),
        ("another client", lambda now: {"azp": "other-app"}, "client 'other-app', which is not one of SMS's clients"),
        ("no client", lambda now: {"azp": None}, "client None, which is not one of SMS's clients"),
    ],
)
def test_tokens_with_a_broken_claim_are_refused(gateway_bed, keycloak, realm_key, attack, changes, reason) -> None:
    assert _accepted_eventually(gateway_bed, _sign(realm_key, _claims(keycloak)))[0] == 200
    status, detail = _status(gateway_bed, _sign(realm_key, _claims(keycloak, **changes(int(time.time())))))
    assert status == 401, attack
    assert reason in detail, (attack, detail)


def test_alg_none_is_refused(gateway_bed, keycloak, realm_key) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": realm_key.kid, "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(_claims(keycloak)).encode())}."
    assert _status(gateway_bed, token) == (401, "not authenticated: algorithm 'none' not allowed")


def test_hs256_signed_with_the_realms_public_key_is_refused(gateway_bed, keycloak) -> None:
    jwks = httpx.get(f"{keycloak.issuer}/protocol/openid-connect/certs", timeout=10).json()
    public = RSAKey.import_key(next(k for k in jwks["keys"] if k["kty"] == "RSA" and k.get("use") == "sig"))
    secret = public.as_pem(private=False)
    header = _b64(json.dumps({"alg": "HS256", "kid": public.kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(keycloak)).encode())
    signature = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert _status(gateway_bed, f"{header}.{payload}.{signature}") == (401, "not authenticated: algorithm 'HS256' not allowed")


def test_tampered_payload_is_refused(gateway_bed, keycloak) -> None:
    header, payload, signature = keycloak.token("viola").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["realm_access"] = {"roles": ["sms-admin"]}
    status, detail = _status(gateway_bed, f"{header}.{_b64(json.dumps(claims).encode())}.{signature}")
    assert status == 401 and "signature" in detail


def test_unknown_kid_is_refused(gateway_bed, keycloak) -> None:
    stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": "not-in-the-realm"})
    assert _status(gateway_bed, _sign(stranger, _claims(keycloak))) == (
        401, "not authenticated: unknown signing key 'not-in-the-realm'"
    )


async def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(keycloak) -> None:
    """A new realm key is found by refetching the JWKS on its unknown kid; a flood of unknown
    kids costs one fetch per interval."""
    settings = GatewaySettings(oidc_issuer=keycloak.issuer, jwks_refresh_seconds=2)
    async with httpx.AsyncClient(timeout=15) as http:
        verifier = TokenVerifier(settings, http)
        assert (await verifier.verify(keycloak.token("viola"))).username == "viola"
        assert verifier.jwks_fetches == 1
        await asyncio.sleep(2.1)  # past the interval, so the new kid may trigger a refetch
        key = RSAKey.generate_key(2048, private=True)
        pem = key.as_pem(private=True).decode()
        rotated = RSAKey.import_key(pem, parameters={"kid": keycloak.add_signing_key(pem)})
        token = _sign(rotated, _claims(keycloak))
        assert (await verifier.verify(token)).username == "mallory"  # unknown kid → refetch → found
        assert verifier.jwks_fetches == 2
        stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": "flood"})
        for _ in range(5):
            with pytest.raises(AuthError, match="unknown signing key"):
                await verifier.verify(_sign(stranger, _claims(keycloak)))
        assert verifier.jwks_fetches == 2  # within the interval: no refetch
        await asyncio.sleep(2.1)
        with pytest.raises(AuthError, match="unknown signing key"):
            await verifier.verify(_sign(stranger, _claims(keycloak)))
        assert verifier.jwks_fetches == 3


# ------------------------------------------------------------------ TLS, health, OpenAPI


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_health_readiness_openapi_and_secure_cookie(keycloak, tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    with GatewayBed(keycloak.issuer, with_prefect=False, tls=(cert, key)) as bed:
        assert bed.url.startswith("https://")
        with httpx.Client(base_url=bed.url, verify=bed.verify, timeout=30) as https:
            assert https.get("/healthz").json() == {"status": "ok"}
            ready = https.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "checks": {"keycloak": "ok"}}
            spec = https.get("/api/v1/openapi.json").json()
            assert {"/healthz", "/readyz", "/auth/login", "/auth/me"} <= set(spec["paths"])
            login = https.get("/auth/login")
            cookie = next(h for h in login.headers.get_list("set-cookie") if h.startswith("sms_session="))
            assert "secure" in cookie.lower() and "httponly" in cookie.lower()
            assert login.headers["location"].startswith(keycloak.issuer)
            assert "redirect_uri=https%3A%2F%2F127.0.0.1" in login.headers["location"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(bed.url.replace("https://", "http://") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
            httpx.get(f"{bed.url}/healthz", timeout=5)


def test_gateway_refuses_half_a_tls_configuration(keycloak, tmp_path) -> None:
    cert, _ = _self_signed(tmp_path)
    env = {**os.environ, "SMS_OIDC_ISSUER": keycloak.issuer, "SMS_GATEWAY_TLS_CERT": str(cert), "COLUMNS": "300"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("sms")), "gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # one line
    assert "give both SMS_GATEWAY_TLS_CERT and SMS_GATEWAY_TLS_KEY" in done.stderr
