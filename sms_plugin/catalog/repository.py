"""Reading and writing the catalog. Every function takes a ``Session`` first and never commits:
the caller's ``Catalog.session()`` block does. Functions that change scripts write their own audit event.
"""

from __future__ import annotations

import hashlib
from typing import Any

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sms_plugin.catalog.models import AuditEvent, HostExecutionRecord, RunRecord, Script, ScriptVersion
from sms_plugin.catalog.retry import idempotent
from sms_plugin.catalog.spec import ScriptSpec
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.fleet.outcome import EXECUTION_STATES

ORIGINAL = "original"
#: Run record columns that ``update_run`` may change.
RUN_FIELDS = frozenset(RunRecord.__table__.columns.keys()) - {"id", "flow_run_id", "created_at"}
#: Host execution columns that ``update_host_execution`` may change.
HOST_EXECUTION_FIELDS = frozenset(HostExecutionRecord.__table__.columns.keys()) - {"id", "run_id", "host"}


# Scripts


def add_script(
    s: Session, spec: ScriptSpec, *, content: str | None, author: str, comment: str = ""
) -> Script:
    """Add a script; its content becomes version 1. Scripts run as ``original`` files have no content."""
    if s.scalar(select(Script.id).where(Script.name == spec.name)) is not None:
        raise Conflict(f"script '{spec.name}' exists already")
    if spec.interpreter == ORIGINAL and content is not None:
        raise InvalidInput(f"script '{spec.name}' runs the original file {spec.path}: give no content")
    if spec.interpreter != ORIGINAL and content is None:
        raise InvalidInput(f"script '{spec.name}' needs content for interpreter '{spec.interpreter}'")
    script = Script(**spec.columns())
    s.add(script)
    s.flush()
    detail: dict[str, Any] = {"interpreter": spec.interpreter, "host": spec.host}
    if spec.targets is not None:
        detail["targets"] = spec.targets
    if content is not None:
        version = _new_version(s, script, 1, content, author, comment)
        detail.update(version=1, sha256=version.sha256)
    audit(s, actor=author, action="script.add", object_type="script", object_name=spec.name, detail=detail)
    return script


def update_script(s: Session, name: str, spec: ScriptSpec, *, author: str) -> tuple[Script, dict[str, tuple[Any, Any]]]:
    """Replace a script's metadata with ``spec``; return the changed fields as ``{field: (old, new)}``."""
    if spec.name != name:
        raise InvalidInput(f"the spec names '{spec.name}' but the script is '{name}': scripts cannot be renamed")
    script = get_script(s, name)
    changes: dict[str, tuple[Any, Any]] = {}
    for field, new in spec.columns().items():
        old = getattr(script, field)
        if old != new:
            changes[field] = (old, new)
            setattr(script, field, new)
    if changes:
        s.flush()
        audit(
            s,
            actor=author,
            action="script.update",
            object_type="script",
            object_name=name,
            detail={"changes": {field: list(pair) for field, pair in changes.items()}},
        )
    return script, changes


def get_script(s: Session, name: str) -> Script:
    """The script named ``name``."""
    script = s.scalar(select(Script).where(Script.name == name))
    if script is None:
        raise NotFound(f"no script named '{name}'")
    return script


def list_scripts(s: Session, *, tag: str | None = None) -> list[Script]:
    """All scripts ordered by name, or those carrying ``tag``."""
    scripts = s.scalars(select(Script).order_by(Script.name)).all()
    return [script for script in scripts if tag is None or tag in script.tags]


def remove_script(s: Session, name: str, *, author: str) -> None:
    """Delete a script and its versions; its run records and audit events stay."""
    script = get_script(s, name)
    versions = s.scalar(select(func.count()).where(ScriptVersion.script_id == script.id))
    s.delete(script)
    s.flush()
    audit(
        s, actor=author, action="script.remove", object_type="script", object_name=name, detail={"versions": versions}
    )


# Versions


def add_version(s: Session, name: str, content: str, *, author: str, comment: str = "") -> tuple[ScriptVersion, bool]:
    """Store ``content`` as the next version; return ``(version, created)``.

    Content identical to the newest version creates nothing and returns ``(newest, False)``.
    """
    script = get_script(s, name)
    if script.interpreter == ORIGINAL:
        raise InvalidInput(f"script '{name}' runs the original file {script.path}: it has no content versions")
    newest = _newest_version(s, script)
    if newest is not None and newest.sha256 == _sha256(content):
        return newest, False
    version = _new_version(s, script, 1 if newest is None else newest.number + 1, content, author, comment)
    audit(
        s,
        actor=author,
        action="script.version",
        object_type="script",
        object_name=name,
        detail={"version": version.number, "sha256": version.sha256, "comment": comment},
    )
    return version, True


def get_version(s: Session, name: str, number: int | None = None) -> ScriptVersion:
    """Version ``number`` of a script, or its newest version when ``number`` is None."""
    script = get_script(s, name)
    if number is None:
        version = _newest_version(s, script)
    else:
        query = select(ScriptVersion).where(ScriptVersion.script_id == script.id, ScriptVersion.number == number)
        version = s.scalar(query)
    if version is not None:
        return version
    newest = _newest_version(s, script)
    if newest is None:
        raise NotFound(f"script '{name}' has no versions")
    raise NotFound(f"script '{name}' has no version {number}: versions are 1 to {newest.number}")


def list_versions(s: Session, name: str) -> list[ScriptVersion]:
    """A script's versions, newest first."""
    script = get_script(s, name)
    query = select(ScriptVersion).where(ScriptVersion.script_id == script.id).order_by(ScriptVersion.number.desc())
    return list(s.scalars(query))


def _sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _newest_version(s: Session, script: Script) -> ScriptVersion | None:
    query = (
        select(ScriptVersion)
        .where(ScriptVersion.script_id == script.id)
        .order_by(ScriptVersion.number.desc())
        .limit(1)
    )
    return s.scalar(query)


def _new_version(s: Session, script: Script, number: int, content: str, author: str, comment: str) -> ScriptVersion:
    version = ScriptVersion(
        script_id=script.id, number=number, content=content, sha256=_sha256(content), author=author, comment=comment
    )
    s.add(version)
    s.flush()
    return version


# Runs


@idempotent
def record_run(
    s: Session,
    flow_run_id: str,
    *,
    script_name: str,
    version_number: int | None,
    host: str,
    trigger: str,
    requested_by: str,
) -> RunRecord:
    """Create the run record of a flow run, or update it when the flow run is retried."""
    fields = {
        "script_name": script_name,
        "version_number": version_number,
        "host": host,
        "trigger": trigger,
        "requested_by": requested_by,
    }
    run = s.scalar(select(RunRecord).where(RunRecord.flow_run_id == flow_run_id))
    if run is None:
        run = RunRecord(flow_run_id=flow_run_id, **fields)
        s.add(run)
    else:
        for field, value in fields.items():
            setattr(run, field, value)
    s.flush()
    return run


@idempotent
def update_run(s: Session, flow_run_id: str, **fields: Any) -> RunRecord:
    """Set some of a run record's fields (e.g. ``remote_pid``, ``exit_code``, ``ended_at``)."""
    unknown = sorted(set(fields) - RUN_FIELDS)
    if unknown:
        raise InvalidInput(f"run records have no field(s) {unknown}: use {sorted(RUN_FIELDS)}")
    run = get_run(s, flow_run_id)
    for field, value in fields.items():
        setattr(run, field, value)
    s.flush()
    return run


HEARTBEATS_PER_STATEMENT = 500
"""Run ids per UPDATE of :func:`touch_heartbeats` (old SQLite allows 999 parameters)."""


@idempotent
def touch_heartbeats(s: Session, flow_run_ids: Collection[str], at: datetime) -> None:
    """Sets ``heartbeat_at`` of these runs' records (missing records are ignored)."""
    ids = sorted(flow_run_ids)
    for start in range(0, len(ids), HEARTBEATS_PER_STATEMENT):
        chunk = ids[start : start + HEARTBEATS_PER_STATEMENT]
        s.execute(update(RunRecord).where(RunRecord.flow_run_id.in_(chunk)).values(heartbeat_at=at))


def get_run(s: Session, flow_run_id: str) -> RunRecord:
    """The run record of a flow run."""
    run = s.scalar(select(RunRecord).where(RunRecord.flow_run_id == flow_run_id))
    if run is None:
        raise NotFound(f"no run record for flow run '{flow_run_id}'")
    return run


def list_runs(
    s: Session, *, script_name: str | None = None, unfinished: bool = False, limit: int = 50
) -> list[RunRecord]:
    """Run records, newest first, optionally of one script, or only those without an end time."""
    query = select(RunRecord).order_by(RunRecord.created_at.desc(), RunRecord.id.desc()).limit(limit)
    if script_name is not None:
        query = query.where(RunRecord.script_name == script_name)
    if unfinished:
        query = query.where(RunRecord.ended_at.is_(None))
    return list(s.scalars(query))


# Host executions


@idempotent
def record_host_execution(s: Session, run_id: str, host: str) -> HostExecutionRecord:
    """Create the ``pending`` row of ``host``'s execution in run ``run_id``, or reset it when the run is retried."""
    row = s.scalar(select(HostExecutionRecord).where(HostExecutionRecord.run_id == run_id, HostExecutionRecord.host == host))
    if row is None:
        row = HostExecutionRecord(run_id=run_id, host=host, state="pending", output_tail="", message="")
        s.add(row)
    else:
        for field in HOST_EXECUTION_FIELDS:
            setattr(row, field, None)
        row.state, row.output_tail, row.message = "pending", "", ""
    s.flush()
    return row


@idempotent
def update_host_execution(s: Session, run_id: str, host: str, **fields: Any) -> HostExecutionRecord:
    """Set some fields of a host execution (``state``, ``remote_pid``, ``exit_code``, ``ended_at`` ...)."""
    unknown = sorted(set(fields) - HOST_EXECUTION_FIELDS)
    if unknown:
        raise InvalidInput(f"host executions have no field(s) {unknown}: use {sorted(HOST_EXECUTION_FIELDS)}")
    if "state" in fields and fields["state"] not in EXECUTION_STATES:
        raise InvalidInput(f"unknown host execution state {fields['state']!r}: use one of {', '.join(EXECUTION_STATES)}")
    row = s.scalar(select(HostExecutionRecord).where(HostExecutionRecord.run_id == run_id, HostExecutionRecord.host == host))
    if row is None:
        raise NotFound(f"run '{run_id}' has no execution on host '{host}'")
    for field, value in fields.items():
        setattr(row, field, value)
    s.flush()
    return row


def host_executions(s: Session, run_id: str) -> list[HostExecutionRecord]:
    """The host executions of run ``run_id``, in the order they were recorded (the run's host order)."""
    query = select(HostExecutionRecord).where(HostExecutionRecord.run_id == run_id).order_by(HostExecutionRecord.id)
    return list(s.scalars(query))


# Audit


def audit(
    s: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_name: str,
    detail: dict[str, Any] | None = None,
    outcome: str = "ok",
    client: str = "",
    subject: str = "",
) -> AuditEvent:
    """Record who did what to which object, from where (``client``), and whether it worked."""
    event = AuditEvent(
        actor=actor,
        action=action,
        object_type=object_type,
        object_name=object_name[:200],
        detail=detail or {},
        outcome=outcome,
        client=client[:64],
        subject=subject[:200],
    )
    s.add(event)
    s.flush()
    return event


def list_audit(
    s: Session,
    *,
    object_name: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Audit events, newest first, optionally filtered by object, actor, action and outcome."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    for column, value in (
        (AuditEvent.object_name, object_name),
        (AuditEvent.actor, actor),
        (AuditEvent.action, action),
        (AuditEvent.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    return list(s.scalars(query))
