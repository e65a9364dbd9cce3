"""The gateway's browser sessions in the catalog. Like ``repository``, every function takes a
``Session`` first and never commits; ids arrive hashed and data sealed (``gateway.sessions``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from sms_plugin.catalog.models import GatewaySession, utcnow


def add_session(s: Session, session_id: str, data: str, expires_at: datetime) -> None:
    s.add(GatewaySession(id=session_id, data=data, expires_at=expires_at))
    s.flush()


def session_data(s: Session, session_id: str) -> str | None:
    """The sealed data of a live session, or None (unknown or expired)."""
    row = s.get(GatewaySession, session_id)
    return row.data if row is not None and row.expires_at > utcnow() else None


def replace_session(s: Session, session_id: str, data: str, expires_at: datetime) -> bool:
    """Store new data for an existing session; False when it is gone (a logout meanwhile):
    a session is never brought back by a late write."""
    done = s.execute(
        update(GatewaySession).where(GatewaySession.id == session_id).values(data=data, expires_at=expires_at)
    )
    return bool(done.rowcount)


def remove_session(s: Session, session_id: str) -> None:
    s.execute(delete(GatewaySession).where(GatewaySession.id == session_id))


def purge_sessions(s: Session) -> int:
    """Delete the expired sessions; returns how many."""
    return int(s.execute(delete(GatewaySession).where(GatewaySession.expires_at <= utcnow())).rowcount)
