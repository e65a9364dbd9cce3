"""The ``run-script`` flow: every managed script is a deployment of this one flow.

It loads the script from the catalog, opens a transport to the host block, runs the script and
maps its exit code to the Prefect state (0 → Completed, anything else → Failed "exit code N").
Output lines go to the run log as they arrive: stdout at INFO, stderr at WARNING.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow, flow, get_client
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from prefect.states import Failed, State

from blocks.hosts import load_host
from sms_plugin import run_events, run_secrets
from sms_plugin.catalog import Catalog, get_script, get_version, record_run, update_run
from sms_plugin.errors import InvalidInput, NotFound, SMSError, TransportError
from sms_plugin.execution import ExecutionResult, ScriptRun, execute
from sms_plugin.limits import host_slot
from sms_plugin.origin import run_origin
from sms_plugin.parameters import declared, masked, resolve
from sms_plugin.heartbeats import heartbeat
from sms_plugin.reaper import ACTOR, reap_run
from sms_plugin.settings import database_url
from sms_plugin.telemetry.logs import OUTPUT, OutputSource, shipping
from sms_plugin.transports.base import Stream
from sms_plugin.worker import log_delivery, prefect_hooks
from sms_plugin.worker.engine import in_shared_process, script_started

_LEVELS: dict[Stream, int] = {"stdout": logging.INFO, "stderr": logging.WARNING}
LOG_WAIT_SECONDS = 30.0
"""In an sms worker, how long a run waits at its end for its log lines to reach Prefect."""


@functools.cache
def _shared_catalog(url: str) -> Catalog:
    """One catalog (engine and connection pool) per database for every run of this process: the
    sms worker runs hundreds of flows in one process, which must not hold an engine each."""
    return Catalog(url)


def _catalog() -> Catalog:
    return _shared_catalog(database_url())


async def _reap_quietly(catalog: Catalog, flow_run_id: str, reason: str) -> str:
    try:
        return await reap_run(catalog, flow_run_id, reason=reason)
    except SMSError as error:
        return f"could not clean up: {error}"


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
    description="Runs one script of the SMS catalog on its host.",
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
) -> int | State:
    """Runs catalog script ``script``: Completed with its exit code 0, or Failed saying why.

    Args:
        script: the script's name in the catalog.
        version: which version to run; the newest when empty.
        args: arguments for a script that declares no parameters; its default arguments when empty.
        env: extra environment variables (only names the script allows), added to the script's own.
        host: run on this host block instead of the script's own host.
        parameters: values of the script's declared parameters, by name.
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
    except InvalidInput as error:
        return await _finish(logger, Failed(message=f"{script} refused its inputs, nothing ran: {error}"))
    if parameters and (hidden := masked(parameters, entry)) != parameters:
        await _mask_secrets(flow_run, hidden)
    chosen = await catalog.aio.run(get_version, script, version) if entry.interpreter != "original" else None
    target_host = host or entry.host
    trigger, requested_by = run_origin(flow_run)
    await catalog.aio.run(
        record_run,
        str(flow_run.id),
        script_name=script,
        version_number=chosen.number if chosen else None,
        host=target_host,
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
    logger.info(f"Running {script} ({version_text}, {entry.interpreter}) on {target_host}")

    process_started = connected = False
    process_group: int | None = None

    async def started(pid: int | None) -> None:
        nonlocal process_started, process_group
        process_started, process_group = True, pid
        script_started()
        logger.info(f"Started as process group {pid}" if pid is not None else "Started (this host reports no process id)")
        await _update(catalog, str(flow_run.id), remote_pid=pid, started_at=datetime.now(UTC), exit_code=None)

    # Output records are tagged so that the log shipper (docs/logs.md) picks them up.
    source = OutputSource(run_id=str(flow_run.id), attempt=flow_run.run_count, script=script,
                          version=chosen.number if chosen else None, host=target_host)

    async def output(stream: Stream, message: str) -> None:
        logger.log(_LEVELS[stream], message, extra={OUTPUT: (source, stream)})

    try:
        host_block = await load_host(target_host)
        # One slot of the host's limit (max_parallel_sessions) from before connecting until closed.
        async with host_slot(target_host, host_block.max_parallel_sessions, holder_id=flow_run.id, logger=logger):
            transport = await host_block.open_transport()
            connected = True
            try:
                async with heartbeat(catalog, str(flow_run.id)), shipping(source, logger.logger):
                    result = await execute(transport, run, on_started=started, on_output=output)
            finally:
                await asyncio.shield(transport.close())
    except SMSError as error:
        if isinstance(error, TransportError):
            run_events.transport_error(script=script, host=target_host, error=error)
        message = f"{script} could not run on {target_host}: {error}"
        if process_started or (connected and isinstance(error, TransportError)):
            # e.g. the connection died mid-run: kill what may still run there, remove the upload
            message += f"; {await _reap_quietly(catalog, str(flow_run.id), str(error))}"
        await _update(catalog, str(flow_run.id), ended_at=datetime.now(UTC))
        return await _finish(logger, Failed(message=message))
    except BaseException:  # cancelled or terminated: execute() has killed the process group
        logger.warning(_stopped(process_started, process_group, target_host))
        _STOPPED.runs.add(str(flow_run.id))
        await _update(catalog, str(flow_run.id), ended_at=datetime.now(UTC))
        raise
    await _update(
        catalog,
        str(flow_run.id),
        exit_code=result.exit_code,
        ended_at=datetime.now(UTC),
        output_tail="\n".join(f"{line.stream}: {line.text}" for line in result.tail),
    )
    run_events.run_finished(str(flow_run.id), script=script, host=target_host, exit_code=result.exit_code,
                            timed_out=result.timed_out, lines=result.lines)
    if problem := _failure(script, result, run.timeout_seconds):
        return await _finish(logger, Failed(message=problem))
    return await _finish(logger, result.exit_code)


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


def _stopped(started: bool, process_group: int | None, host: str) -> str:
    if not started:
        return f"stopped before the script started on {host}"
    if process_group is None:
        return f"stopped: the script's processes were killed on {host}"
    return f"stopped: process group {process_group} killed on {host}"


def _failure(script: str, result: ExecutionResult, timeout: float | None) -> str | None:
    """Why the run failed, or None if it succeeded."""
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


async def _finish(logger: logging.LoggerAdapter, outcome: int | State) -> int | State:
    """Logs the outcome and sends every pending log line to Prefect before the state is final,
    so that whoever sees the run end can read its whole output at once."""
    if isinstance(outcome, State):
        logger.error(outcome.message)
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
