"""The catalog database: one engine, its Alembic migrations and transactional sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from sms_plugin import settings, tls
from sms_plugin.catalog import outbox
from sms_plugin.catalog.aio import AsyncCatalog
from sms_plugin.catalog.retry import Committing, is_idempotent, track_writes, with_retries, wrote
from sms_plugin.listening import is_loopback

MIGRATIONS = Path(__file__).parent / "migrations"

P = ParamSpec("P")
T = TypeVar("T")


def newest_revision() -> str:
    """The newest migration's revision, by the migrations' naming rule: ``versions/NNNN_*.py`` holds
    revision ``"NNNN"``, each the successor of the one before (a unit test holds it to Alembic's head)."""
    return max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


SQLITE_BUSY_SECONDS = 30
"""How long an SQLite writer waits for another process's write (flows, hooks, CLI share the file)."""


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: foreign keys on (SQLite ignores them, and ON DELETE CASCADE, otherwise) and
    write-ahead logging, so that readers never wait for a writer and writers queue for up to
    SQLITE_BUSY_SECONDS instead of failing with "database is locked"."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.close()
    dbapi_connection.isolation_level = None  # transactions are begun by _begin_immediately


def _begin_immediately(connection: Any) -> None:
    """Every SQLite transaction takes the write lock when it begins: a transaction that read first
    and wrote later would fail at once ("database is locked") if another process wrote meanwhile,
    whereas waiting at BEGIN honours the busy timeout."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Catalog:
    """A connection to the catalog database; keep one per process and ``dispose()`` it at the end.

    ``url`` defaults to ``settings.database_url()`` (``SMS_DATABASE_URL`` or an SQLite file under
    ``SMS_HOME``). Objects returned from a session stay readable after it closes (no expiry on commit),
    but relationships not loaded inside the session cannot be loaded afterwards. Async code uses
    ``aio`` (:class:`AsyncCatalog`), never ``session()``: a query must not block an event loop.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = make_url(url or settings.database_url())
        if self.url.get_backend_name() == "sqlite":
            self.engine: Engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
            )
            event.listen(self.engine, "connect", _configure_sqlite)
            event.listen(self.engine, "begin", _begin_immediately)
        else:
            mysql = self.url.get_backend_name() in ("mysql", "mariadb")
            connect_args: dict[str, Any] = {"charset": "utf8mb4"} if mysql else {}
            if mysql and settings.database_tls(self.url.host):
                connect_args["ssl"] = tls.client_context()  # PyMySQL: TLS required, certificate verified
            elif mysql and self.url.host and not is_loopback(self.url.host):
                tls.warn_clear_text(f"the catalog database at {self.url.host}:{self.url.port or 3306}", "SMS_DATABASE_TLS=off")
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args)
            event.listen(self.engine, "handle_error", self._refused_certificate)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The one place catalog changes become events: in their own transaction (the outbox).
        event.listen(self._sessions, "after_flush", outbox.capture)
        track_writes(self._sessions)

    def _refused_certificate(self, context: Any) -> None:
        """A connection refused for the server's certificate leaves as CertificateRefused."""
        refused = tls.refusal(f"the catalog database at {self.url.host}:{self.url.port or 3306}",
                              context.original_exception)
        if refused is not None:
            raise refused from context.original_exception

    def __repr__(self) -> str:
        return f"Catalog({self.url.render_as_string(hide_password=True)!r})"

    def revision(self) -> str | None:
        """The schema's migration revision; None before the first migration."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``); a no-op when current.

        A current schema is recognised without loading Alembic (a third of a CLI verb's start-up)."""
        if revision == "head" and self.revision() == newest_revision():
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def transaction(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(session, *args, **kwargs)`` in one transaction, run again from the start when the
        database aborted it (a Galera conflict, a node leaving: ``catalog.retry``); its result once
        committed. ``work`` must do nothing but catalog reads and writes: it may run more than once.
        A lost commit is run again too when the transaction only read, or when ``work`` is marked
        ``catalog.retry.idempotent``; otherwise it raises ``CommitOutcomeUnknown``."""

        def attempt() -> T:
            with self._sessions() as session:  # closing it rolls back whatever did not commit
                session.begin()
                result = work(session, *args, **kwargs)
                session.flush()
                try:
                    session.commit()
                except DBAPIError as exc:
                    if not wrote(session):
                        raise  # a transaction that only read lost nothing: retried as a read
                    raise Committing(exc) from exc
                return result

        name = getattr(work, "__qualname__", type(work).__name__)
        return with_retries(attempt, idempotent=is_idempotent(work), name=name)

    @cached_property
    def aio(self) -> AsyncCatalog:
        """This catalog for async code: its transactions run in a bounded pool of threads."""
        return AsyncCatalog(self.transaction, repr(self))

    def dispose(self) -> None:
        """Close every pooled connection (after the transactions of ``aio`` have ended)."""
        if "aio" in self.__dict__:
            self.__dict__.pop("aio").close()
        self.engine.dispose()
