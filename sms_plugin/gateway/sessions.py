"""Server-side browser sessions: the cookie carries only a random id, the data lives in the catalog.

:class:`SessionMiddleware` gives every request ``request.session`` (a dict, as Starlette's own
middleware does, so authlib's login state works unchanged), loaded from the catalog by the cookie's
id and written back when it changed. In the catalog a session is keyed by the SHA-256 of its id
(a database reader cannot replay a cookie) and its data is sealed with a key derived from
``SMS_GATEWAY_SESSION_SECRET``, so any gateway process sharing that secret serves any session.

An emptied session (logout) is deleted, so a copied cookie is useless afterwards; a session
marked with :func:`renew` (login) gets a new id. Sessions without a login expire after
:data:`ANONYMOUS_SECONDS`; logged-in ones at the time their ``"expires"`` entry names. Expired
sessions are purged at most once per :data:`PURGE_SECONDS` when a session is created.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sms_plugin.catalog import Catalog
from sms_plugin.catalog import sessions as rows

COOKIE = "sms_session"
#: The session entry holding the Unix time a logged-in session ends.
EXPIRES = "expires"
#: Lifetime of a session nobody has logged in to (the login round trip).
ANONYMOUS_SECONDS = 600
PURGE_SECONDS = 60
_RENEW = "sms.session.renew"
T = TypeVar("T")


def expires_at(data: dict[str, Any]) -> datetime:
    """When a session holding ``data`` ends."""
    return datetime.fromtimestamp(float(data.get(EXPIRES) or time.time() + ANONYMOUS_SECONDS), UTC)


def renew(conn: HTTPConnection) -> None:
    """Give this session a new id when the request ends (after a login: no session fixation)."""
    conn.scope[_RENEW] = True


class SessionStore:
    """Sealed session data in the catalog, keyed by the hash of the cookie's id."""

    def __init__(self, catalog: Catalog, secret: str) -> None:
        self.catalog = catalog
        key = hashlib.sha256(b"sms-gateway-sessions\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._purged_at = float("-inf")

    def __repr__(self) -> str:
        return f"SessionStore({self.catalog!r})"

    async def _call(self, action: Callable[..., T], *args: Any) -> T:
        return await self.catalog.aio.run(action, *args)

    @staticmethod
    def _row_id(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def _seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode()

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The data of a live session, or None (unknown, expired, or sealed with another secret)."""
        sealed = await self._call(rows.session_data, self._row_id(session_id))
        if sealed is None:
            return None
        try:
            return dict(json.loads(self._fernet.decrypt(sealed.encode())))
        except (InvalidToken, ValueError):
            return None

    async def create(self, data: dict[str, Any]) -> str:
        """A new session holding ``data``; returns its id (the cookie's value)."""
        if time.monotonic() - self._purged_at >= PURGE_SECONDS:
            self._purged_at = time.monotonic()
            await self._call(rows.purge_sessions)
        session_id = secrets.token_urlsafe(32)
        await self._call(rows.add_session, self._row_id(session_id), self._seal(data), expires_at(data))
        return session_id

    async def replace(self, session_id: str, data: dict[str, Any]) -> bool:
        """Store ``data`` for a session; False when it was deleted meanwhile (never revived)."""
        return await self._call(rows.replace_session, self._row_id(session_id), self._seal(data), expires_at(data))

    async def remove(self, session_id: str) -> None:
        await self._call(rows.remove_session, self._row_id(session_id))


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


class SessionMiddleware:
    """ASGI middleware: ``scope["session"]`` from the :class:`SessionStore` (see the module docstring)."""

    def __init__(self, app: ASGIApp, store: SessionStore, *, secure: bool) -> None:
        self.app = app
        self.store = store
        self.flags = "; path=/; httponly; samesite=lax" + ("; secure" if secure else "")

    def _cookie(self, session_id: str, max_age: int) -> str:
        return f"{COOKIE}={session_id}; max-age={max(0, max_age)}{self.flags}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = HTTPConnection(scope).cookies.get(COOKIE)
        data = await self.store.load(given) if given else None
        session_id = given if data is not None else None
        scope["session"] = data or {}
        before = _dump(scope["session"])
        saved: list[str] | None = None

        async def save() -> list[str]:
            """Write the session back once; returns the Set-Cookie values to send."""
            nonlocal saved
            if saved is not None:
                return []
            saved = []
            session: dict[str, Any] = scope["session"]
            if not session:
                if session_id:
                    await self.store.remove(session_id)
                if given:
                    saved.append(self._cookie("", 0))
            elif session_id and not scope.get(_RENEW):
                if _dump(session) != before:
                    await self.store.replace(session_id, session)
            else:
                if session_id:
                    await self.store.remove(session_id)
                new_id = await self.store.create(session)
                saved.append(self._cookie(new_id, int(expires_at(session).timestamp() - time.time())))
            return saved

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for cookie in await save():
                    headers.append("set-cookie", cookie)
            elif message["type"] in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
                await save()
            await send(message)

        await self.app(scope, receive, sending)
