"""One host's execution of a ``run-script`` run: a Prefect task run named after the host, or (in a
fleet run of more than ``SMS_FLEET_TASK_RUNS`` hosts) a coroutine of the flow run.

A run on one host is one of these; a fleet run is many, started by the fleet scheduler
(:mod:`sms_plugin.fleet.scheduler`). Each has its own transport, process group, exit code, duration
and output (in a fleet run every log line starts with ``[host]``, and the Elasticsearch documents
carry the host), holds a slot of the host's limit (``max_parallel_sessions``) from before
connecting until closed, and keeps its ``host_executions`` row up to date. What the hosts of a
fleet run share is had once for all of them: the host blocks (one read), the slots (asked for many
hosts per request, :mod:`sms_plugin.fleet.slots`) and the row writes (many per transaction,
:mod:`sms_plugin.fleet.writes`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.logging.loggers import PrefectLogAdapter
from prefect.states import Completed, Failed, State
from sqlalchemy.orm import Session

from blocks.hosts import load_host
from sms_plugin import run_events
from sms_plugin.catalog import Catalog, update_host_execution, update_run
from sms_plugin.errors import SMSError, TransportError
from sms_plugin.execution import ExecutionResult, ScriptRun, execute
from sms_plugin.fleet.executions import execution_id
from sms_plugin.fleet.outcome import HostOutcome, HostState
from sms_plugin.fleet.slots import BulkSlots
from sms_plugin.fleet.writes import BatchedWrites
from sms_plugin.host_kinds import HostKind
from sms_plugin.limits import host_slot
from sms_plugin.reaper import reap_run
from sms_plugin.run_results import OUTPUT_LOGGER
from sms_plugin.telemetry.logs import OUTPUT, OutputSource, shipping
from sms_plugin.transports.base import Stream
from sms_plugin.worker.engine import script_started

_LEVELS: dict[Stream, int] = {"stdout": logging.INFO, "stderr": logging.WARNING}
RECONNECT_SECONDS = 30.0
"""How long a run whose connection died mid-run tries to reach its host again to kill what is
left of its script there, before it ends Failed with "could not reach"."""


class HostRun:
    """What every host execution of one run shares: the catalog, the run, the script to run, and in
    a fleet run the host blocks read at its start, its slots and its batched row writes."""

    def __init__(self, catalog: Catalog, *, flow_run_id: str, attempt: int, hosts: list[str], run: ScriptRun,
                 version: int | None, blocks: Mapping[str, HostKind] | None = None,
                 slots: BulkSlots | None = None) -> None:
        self.catalog = catalog
        self.flow_run_id = flow_run_id
        self.attempt = attempt
        self.hosts = hosts
        self.run = run
        self.version = version
        self.blocks = blocks or {}
        self.slots = slots
        self.writes = BatchedWrites(catalog, self._apply)

    @property
    def script(self) -> str:
        return self.run.name

    @property
    def single(self) -> bool:
        """A run on one host: its run record mirrors the host execution (as before fleet runs)."""
        return len(self.hosts) == 1

    def on(self, host: str) -> ScriptRun:
        """The script run as it goes to ``host`` (marked with the host execution's id)."""
        return dataclasses.replace(self.run, run_id=execution_id(self.flow_run_id, host, len(self.hosts)))

    async def block(self, host: str) -> HostKind:
        """``host``'s block: read at the start of a fleet run, else now."""
        return self.blocks.get(host) or await load_host(host)

    def slot(self, host: str, limit: int, logger: logging.Logger | logging.LoggerAdapter) -> AbstractAsyncContextManager[Any]:
        """One slot of ``host``'s limit: asked for with other hosts' in a fleet run, alone otherwise."""
        if self.slots is not None:
            return self.slots.held(host, limit, logger)
        return host_slot(host, limit, holder_id=self.flow_run_id, logger=logger)

    async def record(self, host: str, **fields: object) -> None:
        """Updates ``host``'s execution row (and, on one host, the run record's same fields)."""
        await self.writes.write(host, **fields)

    def _apply(self, session: Session, host: str, fields: dict[str, Any]) -> None:
        update_host_execution(session, self.flow_run_id, host, **fields)
        if self.single and (run_fields := {k: v for k, v in fields.items() if k not in {"state", "message"}}):
            update_run(session, self.flow_run_id, **run_fields)


class HostLog(logging.LoggerAdapter):
    """A host's log lines in a fleet run start with ``[host] `` (:attr:`OutputSource.prefix`), so
    that the flow run's log tells the hosts apart and ``sms logs RUN --host`` finds them."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, prefix: str) -> None:
        super().__init__(logger, {})
        self.prefix = prefix

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.prefix}{msg}", kwargs


@task(name="host", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def run_on_host(context: HostRun, host: str) -> State:
    """Runs the script on ``host``; Completed with the host's outcome if it succeeded, else Failed
    saying why (the outcome is the state's result either way)."""
    outcome = await execute_on_host(context, host, get_run_logger())
    if outcome.succeeded:
        return Completed(data=outcome, message=f"exit code {outcome.exit_code}")
    return Failed(data=outcome, message=outcome.message)


async def execute_on_host(context: HostRun, host: str, logger: PrefectLogAdapter) -> HostOutcome:
    """The execution itself; cancelled, it stops the script (execute() kills its process group),
    records the stop and re-raises."""
    script, flow_run_id = context.script, context.flow_run_id
    began = time.monotonic()
    # Output records are tagged so that the log shipper (docs/logs.md) picks them up.
    source = OutputSource(run_id=flow_run_id, attempt=context.attempt, script=script, version=context.version,
                          host=host, fleet=not context.single)
    # Output comes from OUTPUT_LOGGER (how readers tell it from SMS's messages), with the run's extras,
    # whether the host is a task run or a coroutine of the flow run.
    output_logger = logging.getLogger(OUTPUT_LOGGER)
    output_log = HostLog(PrefectLogAdapter(output_logger, extra=dict(logger.extra or {})), source.prefix)
    logger = HostLog(logger, source.prefix)
    await context.record(host, state="running")
    process_started = connected = False
    process_group: int | None = None

    async def started(pid: int | None) -> None:
        nonlocal process_started, process_group
        process_started, process_group = True, pid
        script_started()
        logger.info(f"Started as process group {pid}" if pid is not None else "Started (this host reports no process id)")
        await context.record(host, remote_pid=pid, started_at=datetime.now(UTC), exit_code=None)

    async def output(stream: Stream, message: str) -> None:
        output_log.log(_LEVELS[stream], message, extra={OUTPUT: (source, stream)})

    try:
        host_block = await context.block(host)
        # One slot of the host's limit (max_parallel_sessions) from before connecting until closed.
        async with context.slot(host, host_block.max_parallel_sessions, logger):
            transport = await host_block.open_transport()
            connected = True
            try:
                async with shipping(source, output_logger):
                    result = await execute(transport, context.on(host), on_started=started, on_output=output)
            finally:
                await asyncio.shield(transport.close())
    except SMSError as error:
        if isinstance(error, TransportError):
            run_events.transport_error(script=script, host=host, error=error, unreachable=not connected)
        message = f"{script} could not run on {host}: {error}"
        if process_started or (connected and isinstance(error, TransportError)):
            # e.g. the connection died mid-run: kill what may still run there, remove the upload
            message += f"; {await _reap_quietly(context, host, str(error))}"
        state: HostState = "failed" if connected or not isinstance(error, TransportError) else "unreachable"
        await context.record(host, state=state, ended_at=datetime.now(UTC), message=message)
        return HostOutcome(host, state, None, time.monotonic() - began, message)
    except BaseException:  # cancelled or terminated: execute() has killed the process group
        stopped = _stopped(process_started, process_group, host)
        logger.warning(stopped)
        await context.record(host, state="stopped", ended_at=datetime.now(UTC), message=stopped)
        raise
    problem = _failure(script, result, context.run.timeout_seconds)
    state = "timed_out" if result.timed_out else "failed" if problem else "succeeded"
    await context.record(
        host,
        state=state,
        exit_code=result.exit_code,
        ended_at=datetime.now(UTC),
        output_tail="\n".join(f"{line.stream}: {line.text}" for line in result.tail),
        message=problem or "",
    )
    run_events.run_finished(flow_run_id, script=script, host=host, exit_code=result.exit_code,
                            timed_out=result.timed_out, lines=result.lines)
    return HostOutcome(host, state, result.exit_code, time.monotonic() - began, problem or "")


async def _reap_quietly(context: HostRun, host: str, reason: str) -> str:
    """Reaps the run on ``host`` after its connection died, waiting up to :data:`RECONNECT_SECONDS`
    for the host to answer again (a restarted sshd, a short network cut)."""
    try:
        return await reap_run(
            context.catalog, context.flow_run_id, reason=reason, host=host, reconnect_seconds=RECONNECT_SECONDS
        )
    except SMSError as error:
        return f"could not clean up: {error}"


def _stopped(started: bool, process_group: int | None, host: str) -> str:
    if not started:
        return f"stopped before the script started on {host}"
    if process_group is None:
        return f"stopped: the script's processes were killed on {host}"
    return f"stopped: process group {process_group} killed on {host}"


def _failure(script: str, result: ExecutionResult, timeout: float | None) -> str | None:
    """Why the execution failed, or None if it succeeded."""
    errors = result.stderr_tail()
    detail = f"; last stderr: {' | '.join(errors)}" if errors else ""
    if result.timed_out:
        return (
            f"{script} timed out after {timeout:g} s; its remote process group was killed "
            f"(exit code {result.exit_code}){detail}"
        )
    if result.exit_code != 0:
        return f"{script} failed with exit code {result.exit_code}{detail}"
    return None
