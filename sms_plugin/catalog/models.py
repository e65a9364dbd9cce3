"""The catalog's tables: scripts, their immutable versions, run records, the audit log, access rules,
webhooks and their deliveries.

Times are stored as naive UTC (MariaDB's DATETIME has no time zone) and always come back as
timezone-aware UTC ``datetime`` objects. The migrations create the tables (on MariaDB with the
utf8mb4 charset, full Unicode); MariaDB's own column types are chosen when a MariaDB connection asks
for them, so that an SQLite catalog does not import SQLAlchemy's MySQL dialect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

MARIADB = ("mysql", "mariadb")
"""SQLAlchemy's names of the MariaDB dialect."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class LongText(TypeDecorator[str]):
    """Text without MariaDB's 64 KiB TEXT limit (LONGTEXT there, TEXT elsewhere)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MARIADB:
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(Text())


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, naive UTC in the database (microseconds kept), aware UTC out."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MARIADB:
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give the catalog timezone-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the catalog's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Script(Base):
    """A managed script: what to run, where, how and when."""

    __tablename__ = "scripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(LongText, default="")
    interpreter: Mapped[str] = mapped_column(String(32))
    host: Mapped[str | None] = mapped_column(String(100))
    """The host the script runs on; None when it targets a selector (``targets``)."""
    targets: Mapped[str | None] = mapped_column(Text)
    """A host selector (docs/fleet.md): every run goes to the hosts it picks at the run's start."""
    path: Mapped[str | None] = mapped_column(String(1024))
    default_args: Mapped[list[str]] = mapped_column(JSON, default=list)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    parameters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Declared parameters (sms_plugin.parameters.ParameterSpec fields), in argument order."""
    allowed_env: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Environment variable names a run may set."""
    working_dir: Mapped[str | None] = mapped_column(String(1024))
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_delay_seconds: Mapped[int] = mapped_column(Integer, default=30)
    kill_grace_seconds: Mapped[int] = mapped_column(Integer, default=5)
    single_instance: Mapped[str] = mapped_column(String(16), default="off")
    schedules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ScriptVersion]] = relationship(
        back_populates="script",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ScriptVersion.number",
    )

    def __repr__(self) -> str:
        return f"Script(name={self.name!r}, interpreter={self.interpreter!r}, host={self.host!r})"


class ScriptVersion(Base):
    """One immutable content of a script; numbered 1, 2, 3... per script."""

    __tablename__ = "script_versions"
    __table_args__ = (UniqueConstraint("script_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(LongText)
    sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    comment: Mapped[str] = mapped_column(LongText, default="")

    script: Mapped[Script] = relationship(back_populates="versions")

    def __repr__(self) -> str:
        return f"ScriptVersion(script_id={self.script_id!r}, number={self.number!r})"


class RunRecord(Base):
    """What SMS knows about one flow run of a script; Prefect keeps the run's state.

    ``script_name`` is not a foreign key: run records outlive a removed script.
    """

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow_run_id: Mapped[str] = mapped_column(String(36), unique=True)
    script_name: Mapped[str] = mapped_column(String(100), index=True)
    version_number: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(100))
    remote_pid: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(LongText, default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(200))
    output_tail: Mapped[str] = mapped_column(LongText, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"RunRecord(flow_run_id={self.flow_run_id!r}, script_name={self.script_name!r})"


class HostExecutionRecord(Base):
    """One host's execution within a run (a single-host run has one): what ran there and how it
    ended. ``state`` is pending, running, succeeded, failed, timed_out, unreachable, stopped or skipped
    (sms_plugin.fleet.outcome)."""

    __tablename__ = "host_executions"
    __table_args__ = (UniqueConstraint("run_id", "host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    host: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    remote_pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    output_tail: Mapped[str] = mapped_column(LongText, default="")
    message: Mapped[str] = mapped_column(LongText, default="")

    def __repr__(self) -> str:
        return f"HostExecutionRecord(run_id={self.run_id!r}, host={self.host!r}, state={self.state!r})"


class AuditEvent(Base):
    """Who did what to which object, and whether it worked."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_name: Mapped[str] = mapped_column(String(200), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    """ok | denied (authorization) | error (refused or failed: bad input, not found, conflict...)."""
    client: Mapped[str] = mapped_column(String(64), default="")
    """Where the request came from (the gateway's client address); empty for CLI and flows."""
    subject: Mapped[str] = mapped_column(String(200), default="")
    """The caller's stable identity (the token's ``sub``) when ``actor`` came from a token."""

    def __repr__(self) -> str:
        return f"AuditEvent(action={self.action!r}, object_name={self.object_name!r})"


class AccessRule(Base):
    """Narrows what a group, user or role may do to scripts and hosts (see gateway/rbac.py)."""

    __tablename__ = "access_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(200))
    actions: Mapped[list[str]] = mapped_column(JSON)
    script_glob: Mapped[str | None] = mapped_column(String(200))
    script_tag: Mapped[str | None] = mapped_column(String(100))
    host_glob: Mapped[str | None] = mapped_column(String(200))
    host_label: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(LongText, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"AccessRule(id={self.id!r}, subject={self.subject_kind}:{self.subject})"


class Webhook(Base):
    """A signed endpoint ``/hooks/{id}`` that starts one script.

    ``secret`` holds the HMAC key encrypted by the gateway (the catalog never sees it in clear).
    ``arguments`` maps payload fields to the script's arguments:
    ``[{"field": "ref", "pattern": "^[A-Za-z0-9/._-]+$"}, ...]``, in argument order.
    """

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    script: Mapped[str] = mapped_column(String(100), index=True)
    description: Mapped[str] = mapped_column(LongText, default="")
    secret: Mapped[str] = mapped_column(LongText)
    arguments: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    max_per_minute: Mapped[int] = mapped_column(Integer, default=30)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Webhook(id={self.id!r}, script={self.script!r})"


class WebhookDelivery(Base):
    """One call of a webhook and what came of it. ``nonce`` (the delivery id of a call whose
    signature was valid) is unique per webhook: a replay cannot be stored twice."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(40), index=True)
    delivery_id: Mapped[str] = mapped_column(String(200))
    nonce: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    client: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(LongText, default="")
    run_id: Mapped[str | None] = mapped_column(String(36))

    def __repr__(self) -> str:
        return f"WebhookDelivery(webhook_id={self.webhook_id!r}, delivery_id={self.delivery_id!r}, outcome={self.outcome!r})"


class GatewaySession(Base):
    """A browser session of the gateway. ``id`` is the SHA-256 of the cookie's random value (the
    catalog never holds a usable cookie); ``data`` is sealed by the gateway (principal, tokens)."""

    __tablename__ = "gateway_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    def __repr__(self) -> str:
        return f"GatewaySession(expires_at={self.expires_at!r})"


class WebhookRefusal(Base):
    """Refused deliveries of a webhook, counted per reason and hour: a flood adds to a count, not rows."""

    __tablename__ = "webhook_refusals"
    __table_args__ = (UniqueConstraint("webhook_id", "reason", "hour"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(40), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_client: Mapped[str] = mapped_column(String(64), default="")
    last_detail: Mapped[str] = mapped_column(String(500), default="")

    def __repr__(self) -> str:
        return f"WebhookRefusal(webhook_id={self.webhook_id!r}, reason={self.reason!r}, count={self.count})"

class HostGroup(Base):
    """A named host selector (``@name`` in selectors, docs/fleet.md); it may refer to other groups, never
    to itself (directly or through others)."""

    __tablename__ = "host_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(LongText, default="")
    selector: Mapped[str] = mapped_column(String(2000))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"HostGroup(name={self.name!r}, selector={self.selector!r})"


class OutboxEvent(Base):
    """One event waiting to be published (``sms events``): written in the transaction of the catalog
    change it announces (``catalog.outbox``) or appended by the publisher from Prefect's event stream.
    ``position`` orders the outbox; ``id`` is the CloudEvent id, stable across re-sends."""

    __tablename__ = "event_outbox"

    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        return f"OutboxEvent(position={self.position!r}, type={self.type!r}, key={self.key!r})"


class EventPosition(Base):
    """How far a reader got: the publisher's last published outbox position (``kafka``) and the time
    of the newest Prefect event it appended (``prefect``), so both resume after a restart."""

    __tablename__ = "event_positions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"EventPosition(name={self.name!r}, value={self.value!r})"


__all__ = [
    "AccessRule",
    "AuditEvent",
    "Base",
    "EventPosition",
    "GatewaySession",
    "HostExecutionRecord",
    "HostGroup",
    "OutboxEvent",
    "RunRecord",
    "Script",
    "ScriptVersion",
    "UTCDateTime",
    "Webhook",
    "WebhookDelivery",
    "WebhookRefusal",
    "utcnow",
]
