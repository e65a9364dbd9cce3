"""The gateway's audit trail: one catalog event per request action — who (username and token
subject), what (action and object), when, from where (client address) and the outcome
(``ok``, ``denied`` or ``error``; the reason or message in ``detail``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from sms_plugin.catalog import Catalog, audit
from sms_plugin.gateway.principal import Principal


@dataclass(frozen=True)
class Caller:
    """Who is calling and from where."""

    actor: str
    subject: str
    client: str

    @classmethod
    def of(cls, principal: Principal, request: Request) -> Caller:
        return cls(principal.username, principal.subject, client_address(request))


def client_address(request: Request) -> str:
    """The peer address as the server saw it (uvicorn rewrites it from X-Forwarded-For only for
    proxies it was told to trust)."""
    return request.client.host if request.client else ""


async def record(
    catalog: Catalog,
    caller: Caller,
    *,
    action: str,
    object_type: str,
    object_name: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit event in its own transaction (off the event loop: a busy SQLite catalog
    makes writers wait)."""
    await catalog.aio.run(
        audit,
        actor=caller.actor,
        action=action,
        object_type=object_type,
        object_name=object_name,
        detail=detail,
        outcome=outcome,
        client=caller.client,
        subject=caller.subject,
    )
