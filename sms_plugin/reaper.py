"""The reaper: no run stays "Running" after its worker died, no remote script runs on unnoticed.

Three paths lead here:
- the run-script flow's ``on_crashed`` and ``on_cancellation`` hooks (Prefect runs them in another
  process once the flow process is gone) reap that one run at once;
- the run-script flow itself, when the connection to the host failed after the script started
  (what may still run there is killed before the run ends Failed);
- the ``sms-housekeeping`` flow (every 30 s) looks at every run record without an end time:
  if Prefect says the run has ended, or its heartbeat is stale (worker or machine lost), the run
  is marked Crashed in Prefect and reaped; runs no process will end that left nothing on a host
  (a dead worker's Pending runs, a flow lost before its run record or after its end) are marked
  Crashed too (:mod:`sms_plugin.lost_runs`).

Reaping a run (``transports.recovery.reap``) kills what is left of it on each host where one of
its host executions was still running (a fleet run has many), by process
group and by the run's ``SMS_RUN_ID`` marker (so daemonised children go too), removes its state
file and its uploaded script, and records what was done in the run record's notes and in the audit
trail (actor ``sms-reaper``). Hosts whose transport cannot re-find a run (Windows) only get their
uploads removed: Windows ends a lost run's shell after the host's idle timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed
from sqlalchemy.orm import Session

from sms_plugin.catalog import (
    Catalog,
    RunRecord,
    audit,
    get_run,
    get_script,
    host_executions,
    list_runs,
    update_host_execution,
    update_run,
)
from sms_plugin.catalog.retry import backoff
from sms_plugin.errors import HostUnreachable, NotFound, SMSError
from sms_plugin.fleet.executions import execution_id
from sms_plugin.heartbeats import heartbeat_seconds
from sms_plugin.host_kinds import load_host
from sms_plugin.lost_runs import crash_lost_runs
from sms_plugin.transports.base import Transport
from sms_plugin.transports.recovery import reap

ACTOR = "sms-reaper"
DEFAULT_KILL_GRACE_SECONDS = 5.0
REAPED_STATES = frozenset({"running", "stopped"})
"""Host executions a reaping looks at: those that may have left something on their host (a stopped
one too: its stop may not have reached the host)."""


def stale_after() -> timedelta:
    """A running run whose heartbeat is older than this has lost its flow process."""
    return timedelta(seconds=3 * heartbeat_seconds() + 5)


async def reap_run(
    catalog: Catalog, flow_run_id: str, *, reason: str, actor: str = ACTOR, host: str | None = None,
    reconnect_seconds: float = 0,
) -> str:
    """Kills what is left of a run on its hosts and records it; returns the notes written.

    Every host execution of the run ``running`` or ``stopped`` is reaped (only ``host``'s when given), each
    by its own process group and marker; a run recorded before host executions existed is reaped
    on its one host. A host that does not answer is tried again with back-off for up to
    ``reconnect_seconds`` (e.g. its sshd is being restarted)."""
    record = await catalog.aio.run(get_run, flow_run_id)
    try:
        grace = float((await catalog.aio.run(get_script, record.script_name)).kill_grace_seconds)
    except NotFound:
        grace = DEFAULT_KILL_GRACE_SECONDS
    rows = await catalog.aio.run(host_executions, flow_run_id)
    if rows:
        targets = [Target(row.host, row.remote_pid, execution_id(flow_run_id, row.host, len(rows)))
                   for row in rows if (row.host == host if host else row.state in REAPED_STATES)]
    else:
        targets = [Target(record.host, record.remote_pid, flow_run_id)]
    notes = await asyncio.gather(
        *(_reap_host(catalog, record, target, grace, reason, actor, reconnect_seconds) for target in targets)
    )
    return "\n".join(notes)


@dataclass(frozen=True)
class Target:
    """One host execution to reap: its host, process group and marker."""

    host: str
    pgid: int | None
    marker: str


async def _reap_host(
    catalog: Catalog, record: RunRecord, target: Target, grace: float, reason: str, actor: str, reconnect_seconds: float
) -> str:
    flow_run_id = record.flow_run_id
    pgid = target.pgid
    try:
        transport = await _reconnect(target.host, reconnect_seconds)
        try:
            reaped = await reap(transport, target.marker, pgid, grace)
        finally:
            await transport.close()
        pgid, outcome, result = reaped.pgid, str(reaped), "ok"
    except SMSError as error:
        outcome, result = f"could not reach {target.host} to kill process group {pgid}: {error}", "error"
    note = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC {actor}: {reason}; {outcome} on {target.host}"

    def write(session: Session) -> None:
        current = get_run(session, flow_run_id)
        rows = host_executions(session, flow_run_id)
        if result == "ok" and any(row.host == target.host and row.state == "running" for row in rows):
            update_host_execution(session, flow_run_id, target.host, state="stopped", ended_at=datetime.now(UTC), message=note)
        unfinished = any(row.state in ("pending", "running") for row in rows)
        ended = current.ended_at or (datetime.now(UTC) if result == "ok" and not unfinished else None)
        update_run(session, flow_run_id, ended_at=ended, notes=f"{current.notes}{note}\n")
        audit(
            session,
            actor=actor,
            action="run.reap",
            object_type="run",
            object_name=flow_run_id,
            detail={"script": record.script_name, "host": target.host, "pgid": pgid, "reason": reason, "outcome": outcome},
            outcome=result,
        )

    await catalog.aio.run(write)
    return note


async def _reconnect(host_name: str, seconds: float) -> Transport:
    """A transport to ``host_name``, tried again with back-off while the host is unreachable, for
    up to ``seconds``."""
    host = await load_host(host_name)
    deadline = asyncio.get_running_loop().time() + seconds
    attempt = 0
    while True:
        try:
            return await host.open_transport()
        except HostUnreachable:
            attempt += 1
            pause = backoff(attempt, first=0.5, cap=5.0)
            if asyncio.get_running_loop().time() + pause > deadline:
                raise
            await asyncio.sleep(pause)


@dataclass(frozen=True)
class Verdict:
    reason: str
    crash: bool


async def _verdict(record: RunRecord, now: datetime) -> Verdict | None:
    """Why an unfinished run record should be reaped, or None while it is alive."""
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(UUID(record.flow_run_id))
        except ObjectNotFound:
            return Verdict("its flow run no longer exists in Prefect", crash=False)
    state = flow_run.state
    if state is not None and state.is_final():
        return Verdict(f"Prefect says the run is {state.type.value}", crash=False)
    if state is not None and (state.is_scheduled() or state.is_paused()):
        return None
    last_sign = record.heartbeat_at or record.started_at or record.created_at
    if now - last_sign > stale_after():
        seconds = int((now - last_sign).total_seconds())
        return Verdict(f"no heartbeat from its flow process for {seconds} s (worker or machine lost)", crash=True)
    return None


async def housekeeping(catalog: Catalog) -> list[str]:
    """Reaps every unfinished run that has ended in Prefect or lost its flow process, and crashes
    the runs no process will end that left nothing on a host (:mod:`sms_plugin.lost_runs`)."""
    unfinished = await catalog.aio.run(list_runs, unfinished=True, limit=10_000)
    now = datetime.now(UTC)
    async with get_client() as client:
        notes = await crash_lost_runs(client, catalog, now, {record.flow_run_id for record in unfinished})
    for record in unfinished:
        verdict = await _verdict(record, now)
        if verdict is None:
            continue
        if verdict.crash:
            async with get_client() as client:
                await client.set_flow_run_state(
                    UUID(record.flow_run_id), Crashed(message=f"SMS reaper: {verdict.reason}"), force=True
                )
        notes.append(await reap_run(catalog, record.flow_run_id, reason=verdict.reason))
    return notes
