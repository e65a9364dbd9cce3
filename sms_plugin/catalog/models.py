"""The catalog's tables: scripts, their immutable versions, run records and the audit log.

Times are stored as naive UTC (MariaDB's DATETIME has no time zone) and always come back as
timezone-aware UTC ``datetime`` objects.
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
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

#: Text without MariaDB's 64 KiB TEXT limit.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

#: MariaDB tables default to the server's charset (often latin1); the catalog needs full Unicode.
TABLE_OPTIONS = {"mysql_charset": "utf8mb4"}

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, naive UTC in the database (microseconds kept), aware UTC out."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
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
    __table_args__ = TABLE_OPTIONS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(LongText, default="")
    interpreter: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(100))
    path: Mapped[str | None] = mapped_column(String(1024))
    default_args: Mapped[list[str]] = mapped_column(JSON, default=list)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
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
    __table_args__ = (UniqueConstraint("script_id", "number"), TABLE_OPTIONS)

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
    __table_args__ = TABLE_OPTIONS

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


class AuditEvent(Base):
    """Who did what to which object, and whether it worked."""

    __tablename__ = "audit_events"
    __table_args__ = TABLE_OPTIONS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_name: Mapped[str] = mapped_column(String(200), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")

    def __repr__(self) -> str:
        return f"AuditEvent(action={self.action!r}, object_name={self.object_name!r})"


__all__ = ["AuditEvent", "Base", "RunRecord", "Script", "ScriptVersion", "UTCDateTime", "utcnow"]
