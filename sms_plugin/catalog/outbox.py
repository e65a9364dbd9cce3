"""The transactional outbox: every catalog change leaves its event in ``event_outbox`` in the same
transaction, so an event exists if and only if its change was committed (docs/events.md).

One listener on the catalog's sessions (:func:`capture`, installed by ``Catalog``) turns the rows a
flush inserted, changed or deleted into events; nothing else in the code writes catalog events.
Event data names what changed, never a secret (a webhook's sealed key, a script's environment
values or content)::

    sms.script.added {"script": "backup", "interpreter": "bash", "host": "web-1", ...}
    sms.script.changed {"script": "backup", "changed": ["timeout_seconds"]}

The same listener writes the run-side events that SMS itself records in the catalog (topic
``sms.runs``, keyed by the run's script): a host execution's progress (:func:`host_event`:
``sms.run.host.started`` with the remote process id, then ``sms.run.host.<state>`` when it ends; one
per host of a fleet run) and a reaping (``sms.run.reaped``, from the reaper's audit row).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import get_history

from sms_plugin.catalog.models import (
    AccessRule,
    AuditEvent,
    Base,
    EventPosition,
    HostExecutionRecord,
    HostGroup,
    OutboxEvent,
    RunRecord,
    Script,
    ScriptVersion,
    Webhook,
    utcnow,
)

CATALOG_TOPIC = "sms.catalog"
RUNS_TOPIC = "sms.runs"
CATALOG_SOURCE = "/sms/catalog"
RUNS_SOURCE = "/sms/runs"
REAP_ACTION = "run.reap"
HOST_EXECUTION_ENDS = frozenset({"succeeded", "failed", "timed_out", "unreachable", "stopped", "skipped"})
"""The host execution states that end one (``sms_plugin.fleet.outcome``): each becomes an event."""
ADDED, CHANGED, REMOVED = "added", "changed", "removed"


@dataclass(frozen=True)
class Tracked:
    """How rows of one table become events: ``sms.<kind>.<added|changed|removed>``, keyed by
    ``key(row)`` (the script's name where there is one), with ``data(row)`` as the event's data."""

    kind: str
    key: Callable[[Any, Session], str]
    data: Callable[[Any, Session], dict[str, Any]]


def _script_name(version: ScriptVersion, s: Session) -> str:
    script = s.get(Script, version.script_id)
    return script.name if script is not None else ""


TRACKED: dict[type[Base], Tracked] = {
    Script: Tracked("script", lambda r, _: r.name, lambda r, _: {
        "script": r.name, "interpreter": r.interpreter, "host": r.host, "tags": list(r.tags or []),
        "enabled": r.enabled}),
    ScriptVersion: Tracked("script.version", _script_name, lambda r, s: {
        "script": _script_name(r, s), "version": r.number, "sha256": r.sha256, "author": r.author}),
    AccessRule: Tracked("access-rule", lambda r, _: f"access-rule:{r.id}", lambda r, _: {
        "rule": r.id, "subject_kind": r.subject_kind, "subject": r.subject, "actions": list(r.actions or [])}),
    Webhook: Tracked("webhook", lambda r, _: r.script, lambda r, _: {
        "webhook": r.id, "script": r.script, "enabled": r.enabled}),
    HostGroup: Tracked("host-group", lambda r, _: f"host-group:{r.name}", lambda r, _: {
        "group": r.name, "selector": r.selector}),
}
#: ScriptVersion rows are immutable: a version is only ever "pushed".
VERSION_PUSHED = "sms.script.version.pushed"


def _changed_fields(row: Base) -> list[str]:
    columns = row.__table__.columns.keys()
    return sorted(name for name in columns if get_history(row, name).has_changes() and name != "updated_at")


def _catalog_event(s: Session, verb: str, row: Base, at: datetime) -> dict[str, Any] | None:
    """The ``sms.catalog`` event of one added, changed or deleted row, or None."""
    tracked = TRACKED.get(type(row))
    if tracked is None or (isinstance(row, ScriptVersion) and verb != ADDED):
        return None  # a version goes only with its script (cascade)
    data = tracked.data(row, s)
    if verb == CHANGED:
        changed = _changed_fields(row)
        if not changed:
            return None
        data["changed"] = changed
    kind = VERSION_PUSHED if isinstance(row, ScriptVersion) else f"sms.{tracked.kind}.{verb}"
    key = tracked.key(row, s)
    return {"id": str(uuid.uuid4()), "topic": CATALOG_TOPIC, "key": key, "type": kind,
            "source": CATALOG_SOURCE, "subject": key, "time": at, "data": data}


def _run_event(script: str, run_id: str, kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "topic": RUNS_TOPIC, "key": script, "type": kind, "source": RUNS_SOURCE,
            "subject": run_id, "time": at, "data": {"script": script, "run_id": run_id, **data}}


def host_event(script: str, run_id: str, host: str, state: str, *, at: datetime | None = None,
               remote_pid: int | None = None, exit_code: int | None = None,
               seconds: float | None = None) -> dict[str, Any]:
    """The outbox row of one host execution's step: ``state`` ``started`` (its process runs, with
    ``remote_pid``) or an end state (``succeeded``, ``failed``, ``timed_out``, ``unreachable``,
    ``stopped``, ``skipped``; with ``exit_code`` and ``seconds``). Code that records host results
    without the ORM appends it itself, in the same transaction: ``append(s, [host_event(...)])``."""
    if state == "started":
        data: dict[str, Any] = {"host": host, "state": "running", "remote_pid": remote_pid}
    else:
        data = {"host": host, "state": state, "exit_code": exit_code, "seconds": seconds}
    return _run_event(script, run_id, f"sms.run.host.{state.replace('_', '-')}", at or utcnow(), data)


def _host_execution_events(s: Session, row: HostExecutionRecord, at: datetime) -> list[dict[str, Any]]:
    """The events of a flushed change to one host execution: its process started (``started_at``
    set), or it ended (``state`` became an end state)."""
    started = get_history(row, "started_at")
    steps = ["started"] if started.added and started.added[0] is not None and not any(started.deleted or ()) else []
    if get_history(row, "state").added and row.state in HOST_EXECUTION_ENDS:
        steps.append(row.state)
    if not steps:
        return []
    script = s.scalar(select(RunRecord.script_name).where(RunRecord.flow_run_id == row.run_id)) or ""
    seconds = (row.ended_at - row.started_at).total_seconds() if row.started_at and row.ended_at else None
    return [host_event(script, row.run_id, row.host, step, at=at, remote_pid=row.remote_pid,
                       exit_code=row.exit_code, seconds=seconds) for step in steps]


def _run_events(s: Session, verb: str, row: Base, at: datetime) -> list[dict[str, Any]]:
    """The ``sms.runs`` events SMS records in the catalog: host executions' progress, reapings."""
    if isinstance(row, HostExecutionRecord) and verb == CHANGED:
        return _host_execution_events(s, row, at)
    if isinstance(row, AuditEvent) and verb == ADDED and row.action == REAP_ACTION:
        detail = row.detail or {}
        return [_run_event(str(detail.get("script", "")), row.object_name, "sms.run.reaped", at,
                           {"host": detail.get("host"), "result": row.outcome, "reason": detail.get("reason")})]
    return []


def _events(s: Session) -> Iterator[dict[str, Any]]:
    """The events of the flush that just ran, in the order the rows were added, changed, deleted."""
    at = utcnow()
    for verb, rows in ((ADDED, s.new), (CHANGED, s.dirty), (REMOVED, s.deleted)):
        for row in rows:
            if event := _catalog_event(s, verb, row, at):
                yield event
            yield from _run_events(s, verb, row, at)


def capture(s: Session, _context: Any) -> None:
    """``after_flush`` listener: insert the flush's events into the outbox, on the flush's own
    connection (the same transaction; an ORM ``add`` is not allowed during a flush)."""
    with s.no_autoflush:
        rows = list(_events(s))
    if rows:
        s.connection().execute(insert(OutboxEvent), rows)


# The publisher's side


def append(s: Session, events: list[dict[str, Any]]) -> int:
    """Append events that carry their own stable ``id`` (run events); ids already in the outbox are
    skipped. Returns how many were new."""
    if not events:
        return 0
    known = set(s.scalars(select(OutboxEvent.id).where(OutboxEvent.id.in_([e["id"] for e in events]))))
    fresh = [event for event in events if event["id"] not in known]
    if fresh:
        s.execute(insert(OutboxEvent), fresh)
    return len(fresh)


def pending(s: Session, after: int, limit: int) -> list[OutboxEvent]:
    """Up to ``limit`` events after position ``after``, in outbox order."""
    query = select(OutboxEvent).where(OutboxEvent.position > after).order_by(OutboxEvent.position).limit(limit)
    return list(s.scalars(query))


def backlog(s: Session, after: int) -> int:
    """How many events wait after position ``after``."""
    return int(s.scalar(select(func.count()).where(OutboxEvent.position > after)) or 0)


def position_step(s: Session) -> int:
    """How far apart one writer's consecutive positions are: MariaDB's ``auto_increment_increment``
    (Galera sets it to the cluster's size, so that each node's ids differ), 1 on other databases."""
    if s.get_bind().dialect.name not in ("mysql", "mariadb"):
        return 1
    return max(1, int(s.scalar(text("SELECT @@auto_increment_increment")) or 1))


def get_position(s: Session, name: str) -> str | None:
    row = s.get(EventPosition, name)
    return None if row is None else row.value


def set_position(s: Session, name: str, value: str) -> None:
    row = s.get(EventPosition, name)
    if row is None:
        s.add(EventPosition(name=name, value=value))
    else:
        row.value = value
    s.flush()


def purge(s: Session, through: int, keep: int) -> int:
    """Delete published events at or before ``through`` except the newest ``keep`` of them."""
    cutoff = through - keep
    if cutoff <= 0:
        return 0
    return int(s.execute(delete(OutboxEvent).where(OutboxEvent.position <= cutoff)).rowcount)
