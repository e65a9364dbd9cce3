"""The catalog's retry boundary (sms_plugin/catalog/retry.py): which database errors mean "rolled
back, run it again", and that a retried transaction writes its change once, on a real SQLite catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import AuditEvent
from sms_plugin.catalog.repository import audit
from sms_plugin.catalog.retry import CommitOutcomeUnknown, Committing, backoff, retryable, with_retries


def mariadb_error(code: int, *, invalidated: bool = False) -> OperationalError:
    """What SQLAlchemy raises for MariaDB error ``code`` (PyMySQL's exception wrapped)."""
    return OperationalError("COMMIT", {}, pymysql.err.OperationalError(code, f"error {code}"), connection_invalidated=invalidated)


@pytest.mark.parametrize("code", [1213, 1205, 1047, 1180])
def test_server_rolled_back_errors_are_retried_even_at_commit(code):
    assert retryable(mariadb_error(code), committing=False)
    assert retryable(mariadb_error(code), committing=True)


@pytest.mark.parametrize("code", [2003, 2006, 2013])
def test_a_lost_connection_is_retried_before_the_commit_only(code):
    assert retryable(mariadb_error(code), committing=False)
    assert not retryable(mariadb_error(code), committing=True)


def test_an_invalidated_connection_counts_as_lost():
    assert retryable(mariadb_error(9999, invalidated=True), committing=False)
    assert not retryable(mariadb_error(9999, invalidated=True), committing=True)


def test_other_errors_are_not_retried():
    duplicate = IntegrityError("INSERT", {}, pymysql.err.IntegrityError(1062, "Duplicate entry"))
    assert not retryable(duplicate, committing=False)
    assert not retryable(mariadb_error(1064), committing=False)  # a syntax error stays one
    assert not retryable(ValueError("not a database error"), committing=False)


def test_backoff_doubles_up_to_its_cap():
    assert all(0 <= backoff(1) <= 0.05 for _ in range(50))
    assert all(0 <= backoff(4) <= 0.4 for _ in range(50))
    assert all(0 <= backoff(30) <= 2.0 for _ in range(50))
    assert max(backoff(30) for _ in range(200)) > 1.0  # the cap is reached, not a smaller constant


def failing(errors: list[BaseException]):
    """A transaction that raises each of ``errors`` in turn, then returns how often it ran."""
    calls = []

    def transaction() -> int:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return len(calls)

    return transaction


def test_with_retries_runs_again_until_it_succeeds():
    pauses: list[float] = []
    transaction = failing([mariadb_error(1213), Committing(mariadb_error(1213)), mariadb_error(2006)])
    assert with_retries(transaction, sleep=pauses.append) == 4
    assert len(pauses) == 3


def test_a_connection_lost_in_the_commit_is_reported_not_retried():
    pauses: list[float] = []
    with pytest.raises(CommitOutcomeUnknown, match="may or may not|lost during a commit"):
        with_retries(failing([Committing(mariadb_error(2013))]), sleep=pauses.append)
    assert pauses == []


def test_a_non_retryable_error_is_raised_at_once():
    pauses: list[float] = []
    with pytest.raises(OperationalError):
        with_retries(failing([mariadb_error(1064), mariadb_error(1213)]), sleep=pauses.append)
    assert pauses == []


def test_retries_stop_at_the_configured_deadline(monkeypatch):
    monkeypatch.setenv("SMS_CATALOG_RETRY_SECONDS", "0")
    pauses: list[float] = []
    with pytest.raises(OperationalError) as raised:
        with_retries(failing([mariadb_error(1213)] * 5), sleep=pauses.append)
    assert raised.value.orig.args[0] == 1213
    assert len(pauses) <= 1


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    opened = Catalog(f"sqlite:///{tmp_path}/retry.db")
    opened.upgrade()
    yield opened
    opened.dispose()


def test_a_retried_transaction_writes_its_change_once(catalog):
    """The first attempt writes, then the database aborts it; the retry writes again: one row."""
    aborted = [mariadb_error(1213)]

    def work(s: Session) -> None:
        audit(s, actor="tests", action="retry.test", object_type="run", object_name="r-1")
        s.flush()
        if aborted:
            raise aborted.pop()

    catalog.transaction(work)
    with catalog.session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == "retry.test")).all()
    assert len(rows) == 1


def test_a_transaction_that_fails_for_good_writes_nothing(catalog, monkeypatch):
    monkeypatch.setenv("SMS_CATALOG_RETRY_SECONDS", "0.2")

    def work(s: Session) -> None:
        audit(s, actor="tests", action="retry.never", object_type="run", object_name="r-2")
        s.flush()
        raise mariadb_error(1213)

    with pytest.raises(OperationalError):
        catalog.transaction(work)
    with catalog.session() as s:
        assert s.scalars(select(AuditEvent).where(AuditEvent.action == "retry.never")).all() == []


async def test_the_async_facade_goes_through_the_same_boundary(catalog):
    aborted = [mariadb_error(1047)]

    def work(s: Session) -> int:
        audit(s, actor="tests", action="retry.aio", object_type="run", object_name="r-3")
        if aborted:
            raise aborted.pop()
        return 7

    assert await catalog.aio.run(work) == 7
    with catalog.session() as s:
        assert len(s.scalars(select(AuditEvent).where(AuditEvent.action == "retry.aio")).all()) == 1
