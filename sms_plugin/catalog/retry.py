"""The catalog's one retry boundary: a whole transaction is run again when the database aborted it.

A MariaDB Galera cluster aborts a transaction that lost a certification conflict (error 1213, as a
deadlock does), refuses work on a node that left the primary component (1047) and drops the
connections of a node that dies (2006, 2013, 2003...). Each of these rolled the transaction back,
so running the whole unit of work again on a fresh connection writes the change once, never half.
A connection lost *while committing* leaves the change in or out, nobody knows which: a transaction
that wrote nothing (:func:`track_writes`) and work marked :func:`idempotent` (it only sets values, so
a second run after a landed commit changes nothing) are run again; any other work raises
:class:`CommitOutcomeUnknown` instead of a possible double write.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from sms_plugin import settings
from sms_plugin.errors import SMSError

T = TypeVar("T")
W = TypeVar("W", bound=Callable[..., object])

ROLLED_BACK = frozenset({1213, 1205, 1047, 1180, 1158, 1159, 1160, 1161})
"""MariaDB errors after which the server has rolled the transaction back: deadlock or Galera
certification conflict (1213), lock wait timeout (1205), WSREP node not ready (1047), error during
COMMIT (1180), network read/write errors of the server (1158-1161)."""

CONNECTION_LOST = frozenset({2002, 2003, 2006, 2013, 2055, 1927, 4031})
"""Client-side connection errors: cannot connect (2002, 2003), server gone away (2006), lost during
a query (2013, 2055), connection killed (1927), disconnected for inactivity (4031)."""

class CommitOutcomeUnknown(SMSError):
    """The connection was lost while the catalog committed: the change may or may not be stored."""


def idempotent(work: W) -> W:
    """Marks catalog work that only sets values (no row appended, nothing added to a value), so
    that running it again after its commit landed changes nothing: :func:`with_retries` then also
    retries a commit whose outcome is unknown. A method keeps the mark when bound."""
    work.__sms_idempotent__ = True  # type: ignore[attr-defined]
    return work


def is_idempotent(work: object) -> bool:
    """True when ``work`` (a function or bound method) was marked :func:`idempotent`."""
    return getattr(work, "__sms_idempotent__", False) is True


WROTE = "sms_wrote"
"""Key of ``Session.info`` set once the session sent anything but a SELECT."""


def track_writes(sessions: sessionmaker[Session]) -> None:
    """Marks the sessions of ``sessions`` that write (a flush, or a statement other than a SELECT),
    so that the lost commit of a transaction that only read is known to have lost nothing."""
    event.listen(sessions, "after_flush", lambda session, _context: session.info.__setitem__(WROTE, True))
    event.listen(sessions, "do_orm_execute", _statement_executed)


def _statement_executed(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info[WROTE] = True


def wrote(session: Session) -> bool:
    """True when ``session`` (of a :func:`track_writes` maker) wrote in its transaction."""
    return session.info.get(WROTE, False) is True


def error_code(exc: BaseException) -> int | None:
    """The MariaDB/MySQL error number of a driver error wrapped by SQLAlchemy, else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def retryable(exc: BaseException, *, committing: bool) -> bool:
    """True when the transaction that raised ``exc`` was rolled back and may be run again."""
    if not isinstance(exc, DBAPIError):
        return False
    code = error_code(exc)
    if code in ROLLED_BACK:
        return True
    lost = code in CONNECTION_LOST or exc.connection_invalidated
    return lost and not committing


def backoff(attempt: int, *, first: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before attempt ``attempt`` (1 = the first retry): doubling, capped, with full jitter."""
    return random.uniform(0, min(cap, first * 2 ** (attempt - 1)))


def with_retries(
    transaction: Callable[[], T],
    *,
    idempotent: bool = False,
    name: str = "a transaction",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``transaction()`` (which raises :class:`Committing` around a failed commit) run again after a
    back-off while it fails retryably, for up to ``SMS_CATALOG_RETRY_SECONDS`` (default 60) after
    its first failure (the setting is read only then: a transaction that succeeds costs nothing more).
    ``idempotent``: the transaction may run again after a lost commit (see :func:`idempotent`);
    ``name``: what the transaction does, for the message of :class:`CommitOutcomeUnknown`."""
    deadline: float | None = None
    attempt = 0
    while True:
        try:
            return transaction()
        except Committing as failed:
            exc, committing = failed.error, not idempotent
        except DBAPIError as failed:
            exc, committing = failed, False
        if not retryable(exc, committing=committing):
            if committing and (exc.connection_invalidated or error_code(exc) in CONNECTION_LOST):
                raise CommitOutcomeUnknown(f"the catalog connection was lost during the commit of {name}: {exc.orig}") from exc
            raise exc
        if deadline is None:
            deadline = time.monotonic() + settings.current().catalog.retry_seconds
        attempt += 1
        pause = backoff(attempt)
        if time.monotonic() + pause > deadline:
            raise exc
        sleep(pause)


class Committing(Exception):
    """Carries a database error raised by COMMIT (not by the work before it) to :func:`with_retries`."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error
