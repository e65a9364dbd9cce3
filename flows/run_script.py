"""The ``run-script`` flow: every managed script is a deployment of this one flow.

It loads the script from the catalog and runs it on its host, or on many hosts (a fleet run: the
``hosts`` parameter, or the script's ``targets`` selector), each host as a task run of
:mod:`flows.host_execution` under the run's fleet policy (:mod:`sms_plugin.fleet`). On one host the
exit code maps to the Prefect state (0 → Completed, anything else → Failed "exit code N"); a fleet
run is Completed only if every host succeeded, and leaves a summary table artifact. Output lines go
to the run log as they arrive: stdout at INFO, stderr at WARNING.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from prefect import Flow, flow, get_client
from prefect.artifacts import acreate_table_artifact
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, FlowRun, FlowRunPolicy
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from prefect.states import Failed, State
from sqlalchemy.orm import Session

from flows.host_execution import HostRun, execute_on_host, run_on_host
from sms_plugin import run_secrets
from sms_plugin.catalog import (
    Catalog,
    get_script,
    get_version,
    record_host_execution,
    record_run,
    update_host_execution,
    update_run,
)
from sms_plugin.catalog.retry import idempotent
from sms_plugin.errors import InvalidInput, NotFound, SMSError
from sms_plugin.execution import ScriptRun
from sms_plugin.fleet.outcome import HostOutcome, summary_rows, verdict
from sms_plugin.fleet.policy import FleetPolicy
from sms_plugin.fleet.scheduler import Fleet
from sms_plugin.fleet.slots import BulkSlots
from sms_plugin.heartbeats import heartbeat
from sms_plugin.host_kinds import HostKind, load_hosts
from sms_plugin.limits import ensure_host_limits
from sms_plugin.origin import run_origin
from sms_plugin.parameters import MAX_FLEET_HOSTS, declared, masked, resolve
from sms_plugin.reaper import ACTOR, reap_run
from sms_plugin.selection import selected_hosts
from sms_plugin.settings import current, database_url
from sms_plugin.worker import log_delivery, prefect_hooks
from sms_plugin.worker.engine import in_shared_process

T = TypeVar("T", int, dict, State)
LOG_WAIT_SECONDS = 30.0
"""In an sms worker, how long a run waits at its end for its log lines to reach Prefect."""


@functools.cache
def _shared_catalog(url: str) -> Catalog:
    """One catalog (engine and connection pool) per database for every run of this process: the
    sms worker runs hundreds of flows in one process, which must not hold an engine each."""
    return Catalog(url)


def _catalog() -> Catalog:
    return _shared_catalog(database_url())


async def _reap_after(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_crashed / on_cancellation: Prefect runs this in another process once the flow process
    is gone; whatever is left of the script on its host is killed and the kill recorded."""
    try:
        await reap_run(_catalog(), str(flow_run.id), reason=f"the run ended {state.type.value} ({state.message})",
                       actor=f"{ACTOR} (on_{state.name.lower()} hook)")
    except NotFound:
        pass  # the run never reached the point of starting anything


@flow(
    name="run-script",
    description="Runs one script of the SMS catalog on its host, or on many hosts (a fleet run).",
    on_crashed=[_reap_after],
    on_cancellation=[_reap_after],
)
async def run_script(
    script: str,
    version: int | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    host: str | None = None,
    parameters: dict[str, Any] | None = None,
    hosts: list[str] | None = None,
    policy: dict[str, Any] | None = None,
) -> int | dict[str, Any] | State:
    """Runs catalog script ``script``: Completed with its exit code 0, or Failed saying why.

    Args:
        script: the script's name in the catalog.
        version: which version to run; the newest when empty.
        args: arguments for a script that declares no parameters; its default arguments when empty.
        env: extra environment variables (only names the script allows), added to the script's own.
        host: run on this host block instead of the script's own.
        parameters: values of the script's declared parameters, by name.
        hosts: a fleet run on exactly these hosts (not with ``host``); each host is a task run.
        policy: how a fleet run goes through its hosts (``sms_plugin.fleet.policy.FleetPolicy``).
    """
    prefect_hooks.check()  # nothing runs on a Prefect SMS does not fit (once per process)
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    flow_run = context.flow_run
    logger = get_run_logger()
    catalog = _catalog()
    entry = await catalog.aio.run(get_script, script)
    try:  # whatever created the run (Prefect UI or API, a schedule), its inputs are checked here
        parameters = await _claimed_secrets(script, entry, parameters)
        inputs = resolve(entry, args=args, env=env, parameters=parameters)
        fleet_policy = FleetPolicy.parse(policy)
        targets = await _targets(catalog, entry, host, hosts)
    except InvalidInput as error:
        return await _finish(logger, Failed(message=f"{script} refused its inputs, nothing ran: {error}"))
    if parameters and (hidden := masked(parameters, entry)) != parameters:
        await _mask_secrets(flow_run, hidden)
    chosen = await catalog.aio.run(get_version, script, version) if entry.interpreter != "original" else None
    trigger, requested_by = run_origin(flow_run)
    await catalog.aio.run(
        _record_run,
        str(flow_run.id),
        targets.names,
        script_name=script,
        version_number=chosen.number if chosen else None,
        host=targets.summary,
        trigger=trigger,
        requested_by=requested_by,
    )
    await _apply_retry_policy(flow_run.id, entry.retries, entry.retry_delay_seconds, flow_run.empirical_policy)
    run = ScriptRun(
        interpreter=entry.interpreter,
        content=chosen.content if chosen else None,
        path=entry.path,
        args=inputs.args,
        env={**entry.env, **inputs.env},
        working_dir=entry.working_dir,
        timeout_seconds=entry.timeout_seconds,
        kill_grace_seconds=entry.kill_grace_seconds,
        name=script,
        run_id=str(flow_run.id),
    )
    version_text = f"version {chosen.number}" if chosen else entry.path
    logger.info(f"Running {script} ({version_text}, {entry.interpreter}) on {targets.summary}")
    task_runs = not targets.fleet or len(targets.names) <= current().fleet.task_runs
    if not task_runs:
        logger.info(f"{len(targets.names)} hosts: more than SMS_FLEET_TASK_RUNS ({current().fleet.task_runs}), so no task "
                    "run per host; each host's lines start with [host], and the summary table has every host")
    async with _fleet_slots(targets, flow_run.id, logger) as slots:
        host_run = HostRun(catalog, flow_run_id=str(flow_run.id), attempt=flow_run.run_count, hosts=targets.names,
                           run=run, version=chosen.number if chosen else None, blocks=targets.blocks,
                           slots=slots)

        async def run_one(name: str) -> HostOutcome:
            if not task_runs:
                return await execute_on_host(host_run, name, logger)
            state = await run_on_host.with_options(task_run_name=name)(host_run, name, return_state=True)
            outcome = await state.result(raise_on_failure=False)  # a failed host's task carries its HostOutcome
            if isinstance(outcome, BaseException):  # the task raised: the fleet records it as this host's failure
                raise outcome
            return outcome

        fleet = Fleet(targets.names, run_one, fleet_policy)
        try:
            async with heartbeat(catalog, str(flow_run.id)):
                outcomes = await fleet.run()
        except BaseException:  # cancelled or terminated: every running host's process group was killed
            _STOPPED.runs.add(str(flow_run.id))
            await _skip_rest(catalog, str(flow_run.id), fleet.results())
            if targets.fleet:
                await asyncio.shield(_update(catalog, str(flow_run.id), ended_at=datetime.now(UTC)))
            raise
    await _skip_rest(catalog, str(flow_run.id), outcomes)
    if not targets.fleet:
        [outcome] = outcomes
        return await _finish(logger, Failed(message=outcome.message) if not outcome.succeeded else outcome.exit_code)
    await _update(catalog, str(flow_run.id), ended_at=datetime.now(UTC))
    await _summary_artifact(str(flow_run.id), script, outcomes)
    result = {"hosts": [outcome.as_dict() for outcome in outcomes]}
    problem = verdict(script, outcomes)
    return await _finish(logger, Failed(message=problem, data=result) if problem else result)


@dataclass(frozen=True)
class Targets:
    """The hosts of a run, and whether it is a fleet run (``hosts`` given, or the script's selector);
    a fleet run's host blocks are read with its hosts, in one request per kind of host."""

    names: list[str]
    fleet: bool
    blocks: dict[str, HostKind] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The run record's ``host``: the host, or "N hosts" for a fleet run."""
        return self.names[0] if not self.fleet else f"{len(self.names)} hosts"[:100]


async def _targets(catalog: Catalog, entry: Any, host: str | None, hosts: list[str] | None) -> Targets:
    """The hosts to run on: ``host``, ``hosts``, the hosts the script's selector picks now, or
    the script's own host; InvalidInput for a request that cannot be run as asked."""
    if host is not None and hosts is not None:
        raise InvalidInput("give either host (one host) or hosts (a fleet run), not both")
    if hosts is None and host is None and entry.targets:
        try:
            picked = [info.name for info in await selected_hosts(catalog, entry.targets)]
        except SMSError as error:
            raise InvalidInput(f"the script's targets {entry.targets!r} cannot be resolved: {error}") from None
        if not picked:
            raise InvalidInput(f"the script's targets {entry.targets!r} pick no host")
        return await _known(picked)
    if hosts is None:
        return Targets([host or entry.host], fleet=False)
    if not 1 <= len(hosts) <= MAX_FLEET_HOSTS:
        raise InvalidInput(f"a fleet run has from 1 to {MAX_FLEET_HOSTS} hosts, not {len(hosts)}")
    if duplicated := sorted({name for name in hosts if hosts.count(name) > 1}):
        raise InvalidInput(f"the hosts list names {', '.join(duplicated)} more than once")
    return await _known(list(hosts))


async def _known(names: list[str]) -> Targets:
    """``names`` as a fleet run's hosts (with their blocks) once each is a host SMS knows."""
    blocks = await load_hosts(names)
    if unknown := [name for name in names if name not in blocks]:
        shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        raise InvalidInput(f"unknown host(s): {shown}")
    return Targets(names, fleet=True, blocks=blocks)


@asynccontextmanager
async def _fleet_slots(targets: Targets, flow_run_id: UUID, logger: logging.LoggerAdapter) -> AsyncIterator[BulkSlots | None]:
    """A fleet run's host slots, its hosts' limits made sure of in one pass first (None on one host:
    its slot is asked for alone, :func:`sms_plugin.limits.host_slot`)."""
    if not targets.fleet:
        yield None
        return
    await ensure_host_limits({name: block.max_parallel_sessions for name, block in targets.blocks.items()})
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id)
    async with get_client() as client, BulkSlots(client, holder, logger) as slots:
        yield slots


@idempotent
def _record_run(session: Session, flow_run_id: str, hosts: list[str], **fields: Any) -> None:
    """The run record and one pending host execution per host, in one transaction."""
    record_run(session, flow_run_id, **fields)
    for name in hosts:
        record_host_execution(session, flow_run_id, name)


async def _skip_rest(catalog: Catalog, flow_run_id: str, outcomes: list[HostOutcome]) -> None:
    """Marks the host executions that never started ``skipped``, with the reason."""
    skipped = [outcome for outcome in outcomes if outcome.state == "skipped"]

    @idempotent
    def write(session: Session) -> None:
        for outcome in skipped:
            update_host_execution(session, flow_run_id, outcome.host, state="skipped", message=outcome.message)

    if skipped:
        await asyncio.shield(catalog.aio.run(write))


async def _summary_artifact(flow_run_id: str, script: str, outcomes: list[HostOutcome]) -> None:
    """The fleet run's summary table on the flow run: host, state, exit code, duration, last stderr."""
    await acreate_table_artifact(
        key=f"fleet-{flow_run_id}",
        table=summary_rows(outcomes),
        description=f"{script} on {len(outcomes)} hosts: {_counts(outcomes)}",
    )


def _counts(outcomes: list[HostOutcome]) -> str:
    counts = Counter(outcome.state for outcome in outcomes)
    return ", ".join(f"{count} {state.replace('_', ' ')}" for state, count in sorted(counts.items()))


class _StoppedRunLine(logging.Filter):
    """Drops the engine's "Finished in state Running()" of a run SMS has just stopped: the worker,
    not the engine, moves a stopped run to Cancelled, so that line is false (docs/decisions.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = str(getattr(record, "flow_run_id", ""))
        if run_id in self.runs and record.getMessage().startswith("Finished in state Running"):
            self.runs.discard(run_id)
            return False
        return True


_STOPPED = _StoppedRunLine()
logging.getLogger("prefect.flow_runs").addFilter(_STOPPED)


async def _finish(logger: logging.LoggerAdapter, outcome: T) -> T:
    """Logs the outcome and sends every pending log line to Prefect before the state is final,
    so that whoever sees the run end can read its whole output at once."""
    if isinstance(outcome, State):
        logger.error(outcome.message)
    elif isinstance(outcome, dict):
        logger.info(f"finished: all {len(outcome['hosts'])} hosts succeeded")
    else:
        logger.info(f"finished with exit code {outcome}")
    if in_shared_process():
        await _logs_sent()
    else:
        await APILogHandler.aflush()  # stops Prefect's log service: fine for a process of its own
    return outcome


async def _logs_sent() -> None:
    """Waits until this run's log lines have been sent (at most LOG_WAIT_SECONDS), leaving
    Prefect's log service running for the other runs of the worker."""
    if not await log_delivery.handled(log_delivery.queued(), LOG_WAIT_SECONDS):
        get_run_logger().warning(f"log lines still on their way to Prefect after {LOG_WAIT_SECONDS:g} s")


async def _update(catalog: Catalog, flow_run_id: str, **fields: object) -> None:
    await catalog.aio.run(update_run, flow_run_id, **fields)


async def _claimed_secrets(script: str, entry: Any, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """``parameters`` with the secret values their creator stashed (:mod:`sms_plugin.run_secrets`)."""
    secret_names = {spec.name for spec in declared(entry) if spec.secret}
    if not parameters or not secret_names & set(parameters):
        return parameters
    async with get_client() as client:
        return await run_secrets.claim(client, script, parameters, secret_names)


async def _mask_secrets(flow_run: FlowRun, hidden: dict[str, Any]) -> None:
    """Replaces the secret values in the run's stored parameters (the Prefect UI shows them) once
    this process holds them; a re-run from the UI then asks for the secret again."""
    async with get_client() as client:
        await client.update_flow_run(flow_run.id, parameters={**flow_run.parameters, "parameters": hidden})


async def _apply_retry_policy(flow_run_id: UUID, retries: int, delay: int, current: FlowRunPolicy) -> None:
    """Prefect's server decides retries from the run's policy: give it the script's (one request
    fewer per run when nothing changes: no retries means the delay does not matter)."""
    if (current.retries or 0) == retries and (retries == 0 or current.retry_delay == delay):
        return
    policy = current.model_copy(update={"retries": retries, "retry_delay": delay})
    async with get_client() as client:
        await client.update_flow_run(flow_run_id, empirical_policy=policy)
