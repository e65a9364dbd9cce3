"""Authentication: Keycloak access tokens (bearer JWT) and the browser session (code + PKCE).

- :class:`TokenVerifier` checks a JWT against the realm: asymmetric algorithm from the allow-list,
  a ``kid`` found in the realm's JWKS (cached; an unknown ``kid`` refetches it, at most once per
  ``jwks_refresh_seconds``), signature, issuer, audience, ``exp``, ``nbf``, ``iat``; then that it
  is an access token (``typ`` Bearer: no ID or refresh token) issued to one of SMS's clients (``azp``).
- :data:`router` serves ``/auth/login`` (redirect to Keycloak with PKCE S256), ``/auth/callback``
  (code → tokens, the access token verified like a bearer token, the principal and tokens kept in
  the server-side session, :mod:`sms_plugin.gateway.sessions`), ``/auth/logout`` (form post with
  CSRF token; deletes the session and ends the Keycloak session too) and ``/auth/me``.
- A session's roles are re-read at Keycloak (refresh grant) every ``session_recheck_seconds``; a
  refused refresh (user disabled, Keycloak session ended) or a lost role ends the session.
- :func:`require_principal` is the FastAPI dependency of every protected route;
  :func:`websocket_origin_allowed` guards cookie-authenticated websocket handshakes.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import secrets
import time
import warnings
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import HTTPConnection
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.websockets import WebSocket

from sms_plugin import tls
from sms_plugin.gateway import sessions
from sms_plugin.gateway.config import GatewaySettings
from sms_plugin.gateway.principal import Principal

import authlib.deprecate  # noqa: E402 - first, so that the filter below comes after its own

with warnings.catch_warnings():
    # Authlib >= 1.7 nags that it would prefer the `httpx2` package; the httpx it falls back to
    # is the one Prefect ships, and it works.
    warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

SESSION_KEY = "principal"
CSRF_KEY = "csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


class AuthError(Exception):
    """A token or session that does not authenticate anybody; ``str()`` says why."""


def unauthorized(reason: str) -> HTTPException:
    """401 with a JSON ``detail`` and the bearer challenge."""
    quoted = reason.replace('"', "'")
    return HTTPException(
        401,
        detail=f"not authenticated: {reason}",
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{quoted}"'},
    )


def principal_from_claims(claims: dict[str, Any], client_id: str) -> Principal:
    """Roles from ``realm_access`` and ``resource_access[client_id]``; groups without '/'; a
    service account (client credentials) is named by its client id."""
    roles = set(claims.get("realm_access", {}).get("roles", []))
    roles |= set(claims.get("resource_access", {}).get(client_id, {}).get("roles", []))
    groups = frozenset(str(g).lstrip("/") for g in claims.get("groups", []))
    username = claims.get("preferred_username") or claims["sub"]
    if claims.get("client_id") or username == f"service-account-{claims.get('azp')}":  # a client's own token
        username = claims.get("client_id") or claims["azp"]
    return Principal(
        subject=str(claims["sub"]), username=str(username), roles=frozenset(roles), groups=groups
    )


class TokenVerifier:
    """Verifies Keycloak access tokens of one realm (see the module docstring)."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.keys: KeySet | None = None
        self.jwks_fetches = 0
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._metadata: dict[str, Any] | None = None

    async def metadata(self) -> dict[str, Any]:
        """The realm's OpenID discovery document (fetched once)."""
        if self._metadata is None:
            url = f"{self.settings.oidc_issuer}/.well-known/openid-configuration"
            reply = await self.http.get(url)
            reply.raise_for_status()
            self._metadata = reply.json()
        return self._metadata

    async def _refresh(self, *, force: bool) -> KeySet:
        async with self._lock:
            due = time.monotonic() - self._fetched_at >= self.settings.jwks_refresh_seconds
            if self.keys is None or (force and due):
                reply = await self.http.get((await self.metadata())["jwks_uri"])
                reply.raise_for_status()
                self.keys = KeySet.import_key_set(reply.json())
                self.jwks_fetches += 1
                self._fetched_at = time.monotonic()
            return self.keys

    async def keys_loaded(self) -> KeySet:
        """The realm's keys (fetched on first use)."""
        return await self._refresh(force=False)

    async def _key_set(self, kid: str) -> KeySet:
        keys = await self._refresh(force=False)
        if not any(key.kid == kid for key in keys):
            keys = await self._refresh(force=True)
        if not any(key.kid == kid for key in keys):
            raise AuthError(f"unknown signing key {kid!r}")
        return keys

    async def verify(self, token: str) -> Principal:
        """The principal of a valid access token, or :class:`AuthError`."""
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise AuthError("malformed token") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.settings.oidc_algorithms:
            raise AuthError(f"algorithm {alg!r} not allowed")
        if not isinstance(kid, str):
            raise AuthError("token has no key id")
        try:
            keys = await self._key_set(kid)
        except httpx.HTTPError as exc:
            reason = tls.failure_name(f"Keycloak at {self.settings.oidc_issuer}", exc)
            raise AuthError(f"the identity provider's keys are unavailable ({reason})") from exc
        try:
            decoded = jwt.decode(token, keys, algorithms=self.settings.oidc_algorithms)
            registry = jwt.JWTClaimsRegistry(
                leeway=self.settings.oidc_leeway,
                iss={"essential": True, "value": self.settings.oidc_issuer},
                aud={"essential": True, "value": self.settings.oidc_audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise AuthError(exc.description or exc.error.replace("_", " ")) from exc
        except ValueError as exc:
            raise AuthError("malformed token") from exc
        claims = decoded.claims
        if claims.get("typ") != "Bearer":
            raise AuthError(f"not an access token (typ {claims.get('typ')!r}): send the access token")
        if claims.get("azp") not in self.settings.oidc_allowed_clients:
            raise AuthError(f"token issued to client {claims.get('azp')!r}, which is not one of SMS's clients")
        return principal_from_claims(claims, self.settings.oidc_client_id)


class Authenticator:
    """What the routes and dependencies need: settings, the verifier and the OAuth client."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings, http)
        self.oauth = OAuth()
        secret = settings.oidc_client_secret
        self.oauth.register(
            "keycloak",
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256",
                           "verify": tls.client_context()},
        )

    @property
    def client(self) -> Any:
        return self.oauth.keycloak


def _authenticator(conn: HTTPConnection) -> Authenticator:
    return conn.app.state.authenticator


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise unauthorized("the Authorization header must be 'Bearer <access token>'")
    return value.strip()


def _stored_principal(stored: dict[str, Any]) -> Principal:
    return Principal(
        subject=stored["subject"],
        username=stored["username"],
        roles=frozenset(stored["roles"]),
        groups=frozenset(stored["groups"]),
    )


def _session_entry(principal: Principal, tokens: dict[str, Any]) -> dict[str, Any]:
    """What a session keeps of a login or a refresh: the principal, when its roles were read,
    and the tokens (server-side only)."""
    return {
        "subject": principal.subject,
        "username": principal.username,
        "roles": sorted(principal.roles),
        "groups": sorted(principal.groups),
        "checked_at": time.time(),
        "id_token": tokens.get("id_token"),
        "refresh_token": tokens.get("refresh_token"),
    }


async def _reread(auth: Authenticator, stored: dict[str, Any]) -> dict[str, Any]:
    """The session entry with roles read again at Keycloak (refresh grant); :class:`AuthError`
    when Keycloak refuses (user disabled, session ended) or the user lost a role."""
    settings = auth.settings
    form = {"grant_type": "refresh_token", "refresh_token": stored.get("refresh_token") or "",
            "client_id": settings.oidc_client_id}
    if settings.oidc_client_secret:
        form["client_secret"] = settings.oidc_client_secret.get_secret_value()
    try:
        reply = await auth.verifier.http.post((await auth.verifier.metadata())["token_endpoint"], data=form)
    except httpx.HTTPError as exc:
        raise HTTPException(503, detail="the identity provider is unreachable; try again") from exc
    if reply.status_code >= 500:
        raise HTTPException(503, detail="the identity provider is unavailable; try again")
    if reply.status_code != 200:
        raise AuthError("the session ended at the identity provider; log in again")
    tokens = reply.json()
    principal = await auth.verifier.verify(str(tokens.get("access_token")))
    if not principal.roles >= frozenset(stored["roles"]):
        raise AuthError("your roles changed; log in again")
    return _session_entry(principal, {"id_token": stored.get("id_token"), **tokens})


async def session_principal(conn: HTTPConnection) -> Principal | None:
    """The principal of the browser session, if any; its roles are re-read when due. A session
    that cannot continue is deleted and raises :class:`AuthError` saying why."""
    stored = conn.session.get(SESSION_KEY) if "session" in conn.scope else None
    if not stored:
        return None
    auth = _authenticator(conn)
    if time.time() - stored["checked_at"] >= auth.settings.session_recheck_seconds:
        try:
            stored = conn.session[SESSION_KEY] = await _reread(auth, stored)
        except AuthError:
            conn.session.clear()
            raise
    return _stored_principal(stored)


def csrf_token(conn: HTTPConnection) -> str:
    """The session's CSRF token (created on first use)."""
    if CSRF_KEY not in conn.session:
        conn.session[CSRF_KEY] = secrets.token_urlsafe(24)
    return str(conn.session[CSRF_KEY])


def _trusted_origin(conn: HTTPConnection, origin: str) -> bool:
    """``origin`` is the gateway's own (the request's ``Host``) or in SMS_GATEWAY_ALLOWED_ORIGINS."""
    allowed = _authenticator(conn).settings.allowed_origins
    return urlsplit(origin).netloc == conn.headers.get("host", "") or origin.rstrip("/") in allowed


def _check_csrf(request: Request, form_token: str | None = None) -> None:
    """Cookie-authenticated state changes must come from a trusted origin: a foreign ``Origin`` is
    refused, and a body a foreign form could send must carry the session's CSRF token."""
    origin = request.headers.get("origin")
    if origin and not _trusted_origin(request, origin):
        raise HTTPException(403, detail="cross-origin request refused (CSRF protection)")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES or not content_type:
        sent = form_token or request.headers.get("x-csrf-token") or ""
        expected = request.session.get(CSRF_KEY, "")
        if not expected or not hmac.compare_digest(sent, expected):
            raise HTTPException(403, detail="missing or wrong CSRF token")


async def authenticate(conn: HTTPConnection) -> Principal:
    """The caller of an HTTP request or websocket handshake: bearer token first, then the
    session cookie; 401 otherwise. (No CSRF check; see :func:`require_principal`.)"""
    token = _bearer(conn)
    if token is not None:
        try:
            return await _authenticator(conn).verifier.verify(token)
        except AuthError as exc:
            raise unauthorized(str(exc)) from exc
    try:
        principal = await session_principal(conn)
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc
    if principal is None:
        raise unauthorized("send a bearer access token or log in at /auth/login")
    return principal


async def websocket_origin_allowed(websocket: WebSocket) -> bool:
    """False, after refusing the handshake (403), when the browser session's cookie would
    authenticate it but its ``Origin`` is missing or not trusted (cross-site websocket hijacking).
    Handshakes with a bearer header or without a session need no ``Origin``."""
    if websocket.headers.get("authorization") or not websocket.session.get(SESSION_KEY):
        return True
    origin = websocket.headers.get("origin")
    if origin and _trusted_origin(websocket, origin):
        return True
    await websocket.close(WS_1008_POLICY_VIOLATION, reason="cross-origin websocket refused")
    return False


async def require_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller (bearer JWT or session cookie), else 401; a
    cookie-authenticated state change must also pass the CSRF check (403)."""
    principal = await authenticate(request)
    if _bearer(request) is None and request.method not in _SAFE_METHODS:
        _check_csrf(request)
    return principal


router = APIRouter(prefix="/auth", tags=["auth"])


def _safe_next(target: str | None) -> str:
    """A local path to return to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _callback_url(request: Request) -> str:
    return f"{_authenticator(request).settings.base_url}/auth/callback"


@router.get("/login", summary="Log in with Keycloak (authorization code + PKCE)")
async def login(request: Request, next: str = "/") -> Any:
    request.session["next"] = _safe_next(next)
    return await _authenticator(request).client.authorize_redirect(request, _callback_url(request))


@router.get("/callback", include_in_schema=False)
async def callback(request: Request) -> Any:
    auth = _authenticator(request)
    try:
        token = await auth.client.authorize_access_token(request)
        principal = await auth.verifier.verify(token["access_token"])
    except (OAuthError, AuthError, KeyError) as exc:
        return JSONResponse({"detail": f"login failed: {exc}"}, status_code=400)
    target = _safe_next(request.session.pop("next", "/"))
    request.session.clear()
    request.session[SESSION_KEY] = _session_entry(principal, token)
    request.session[sessions.EXPIRES] = time.time() + auth.settings.session_seconds
    request.session[CSRF_KEY] = secrets.token_urlsafe(24)
    sessions.renew(request)
    return RedirectResponse(target, status_code=303)


@router.get("/logout", response_class=HTMLResponse, summary="A logout button (form with CSRF token)")
async def logout_page(request: Request) -> HTMLResponse:
    token = html.escape(csrf_token(request))
    return HTMLResponse(
        "<!doctype html><title>SMS: log out</title>"
        '<form method="post" action="/auth/logout">'
        f'<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit">Log out</button></form>'
    )


@router.post("/logout", summary="End the session here and at Keycloak")
async def logout(request: Request) -> RedirectResponse:
    form = parse_qs((await request.body()).decode(errors="replace"))  # the logout page's urlencoded form
    _check_csrf(request, form.get("csrf_token", [None])[0])
    auth = _authenticator(request)
    id_token = (request.session.get(SESSION_KEY) or {}).get("id_token")
    request.session.clear()
    end_session = (await auth.verifier.metadata()).get("end_session_endpoint")
    if not end_session:
        return RedirectResponse("/", status_code=303)
    query = {"client_id": auth.settings.oidc_client_id, "post_logout_redirect_uri": auth.settings.base_url + "/"}
    if id_token:
        query["id_token_hint"] = id_token
    return RedirectResponse(f"{end_session}?{urlencode(query)}", status_code=303)


@router.get("/config", summary="Where to log in (for `sms login`)")
async def config(request: Request) -> dict[str, str]:
    settings = _authenticator(request).settings
    return {"issuer": settings.oidc_issuer, "cli_client_id": settings.oidc_cli_client_id}


@router.get("/me", summary="Who the caller is")
async def me(request: Request, principal: Principal = Depends(require_principal)) -> dict[str, Any]:
    """The caller; for a browser session also its CSRF token (the console's logout form posts it)."""
    answer: dict[str, Any] = {
        "subject": principal.subject,
        "username": principal.username,
        "roles": sorted(principal.roles),
        "groups": sorted(principal.groups),
    }
    if _bearer(request) is None:
        answer["csrf_token"] = csrf_token(request)
    return answer


@router.get("/register", summary="Keycloak's own registration page, then back here logged in")
async def register(request: Request) -> Any:
    request.session["next"] = "/"
    return await _authenticator(request).client.authorize_redirect(
        request, _callback_url(request), prompt="create"
    )

