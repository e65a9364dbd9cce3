"""The catalog's retry boundary (sms_plugin/catalog/retry.py): which database errors mean "rolled
back, run it again", and that a retried transaction writes its change once, on a real SQLite catalog."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from sms_plugin.catalog import Catalog
from sms_plugin.catalog import repository
from sms_plugin.catalog.models import AuditEvent, HostExecutionRecord, OutboxEvent
from sms_plugin.catalog.repository import audit, record_host_execution, record_run, update_host_execution
from sms_plugin.catalog.retry import (
    CommitOutcomeUnknown,
    Committing,
    backoff,
    idempotent,
    is_idempotent,
    retryable,
    with_retries,
)
from sms_plugin.fleet.writes import BatchedWrites


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
    with pytest.raises(CommitOutcomeUnknown, match="lost during the commit of a transaction"):
        with_retries(failing([Committing(mariadb_error(2013))]), sleep=pauses.append)
    assert pauses == []


def test_idempotent_work_is_run_again_after_a_connection_lost_in_the_commit():
    pauses: list[float] = []
    transaction = failing([Committing(mariadb_error(2013)), Committing(mariadb_error(9999, invalidated=True))])
    assert with_retries(transaction, idempotent=True, sleep=pauses.append) == 3
    assert len(pauses) == 2


def test_the_run_path_writes_are_marked_idempotent_and_appending_ones_are_not():
    for work in (repository.record_run, repository.update_run, repository.touch_heartbeats,
                 repository.record_host_execution, repository.update_host_execution):
        assert is_idempotent(work), work.__name__
    assert is_idempotent(BatchedWrites(None, lambda *_: None)._batch)  # type: ignore[arg-type]  # bound: keeps the mark
    assert not is_idempotent(audit)
    assert not is_idempotent(repository.add_version)
    assert not is_idempotent(lambda s: None)


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
def catalog(own_catalog: Catalog) -> Catalog:
    return own_catalog


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


@pytest.fixture
def commit_lost(catalog: Catalog) -> Iterator[list[str]]:
    """Arms the catalog so that its next commit lands, then reports its connection lost (as when a
    Galera node dies while answering COMMIT): append to the list to arm, it is empty once it fired."""
    armed: list[str] = []

    def lost(_session: Session) -> None:
        if armed:
            armed.pop()
            raise mariadb_error(2013, invalidated=True)

    event.listen(catalog._sessions, "after_commit", lost)
    yield armed
    event.remove(catalog._sessions, "after_commit", lost)


def _pending_execution(catalog: Catalog) -> None:
    def work(s: Session) -> None:
        record_run(s, "r-5", script_name="backup", version_number=None, host="web-1", trigger="api", requested_by="tests")
        record_host_execution(s, "r-5", "web-1")

    catalog.transaction(work)


def test_an_idempotent_write_whose_commit_outcome_is_lost_lands_once_with_one_event(catalog, commit_lost):
    """The commit landed but said it was lost: the write runs again, finds its values set, changes
    nothing, and the outbox holds one event of the host's end."""
    _pending_execution(catalog)
    commit_lost.append("armed")
    row = catalog.transaction(update_host_execution, "r-5", "web-1", state="succeeded", exit_code=0)
    assert commit_lost == []  # it fired
    assert row.state == "succeeded"
    with catalog.session() as s:
        assert s.scalars(select(HostExecutionRecord.state)).all() == ["succeeded"]
        ends = s.scalars(select(OutboxEvent.type).where(OutboxEvent.type == "sms.run.host.succeeded")).all()
    assert ends == ["sms.run.host.succeeded"]


def test_an_appending_write_whose_commit_outcome_is_lost_is_reported_not_repeated(catalog, commit_lost):
    commit_lost.append("armed")
    with pytest.raises(CommitOutcomeUnknown, match="lost during the commit of .*<lambda>"):
        catalog.transaction(lambda s: audit(s, actor="tests", action="retry.lost", object_type="run", object_name="r-6"))
    with catalog.session() as s:  # it had landed: one row, not two
        assert len(s.scalars(select(AuditEvent).where(AuditEvent.action == "retry.lost")).all()) == 1


def test_a_transaction_that_only_read_is_run_again_after_its_commit_is_lost(catalog, commit_lost):
    _pending_execution(catalog)
    commit_lost.append("armed")
    assert catalog.transaction(lambda s: s.scalars(select(HostExecutionRecord.host)).all()) == ["web-1"]
    assert commit_lost == []  # it fired, and the read was answered all the same


def test_a_statement_that_writes_outside_a_flush_counts_as_a_write(catalog, commit_lost):
    _pending_execution(catalog)
    commit_lost.append("armed")
    with pytest.raises(CommitOutcomeUnknown):
        catalog.transaction(lambda s: s.execute(update(HostExecutionRecord).values(message="set by a statement")))


def test_a_marked_function_keeps_working_as_itself():
    @idempotent
    def work(s: object, value: int) -> int:
        return value * 2

    assert work(None, 21) == 42 and is_idempotent(work)
