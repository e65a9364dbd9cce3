"""Run services: start a script's deployment, wait for the result, stop it, read its logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTaskRunId,
    LogFilterTextSearch,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from sms_plugin.catalog import Catalog, HostExecutionRecord, get_run, get_script, get_version, host_executions
from sms_plugin.deploy import deployment_name
from sms_plugin import fleet_hosts
from sms_plugin import hosts as host_services
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.fleet.policy import FleetPolicy
from sms_plugin.lazy import lazy_module
from sms_plugin.limits import refuse_second_run
from sms_plugin.origin import origin_tags
from sms_plugin import run_secrets
from sms_plugin.parameters import declared, resolve
from sms_plugin.run_results import OUTPUT_LOGGER, HostResult, LogLine, RunResult
from sms_plugin.selection import selected_hosts
from sms_plugin.settings import current

if TYPE_CHECKING:
    from sms_plugin.telemetry.logs import reader as log_reader
else:  # Elasticsearch's client: loaded when a log is read from it
    log_reader = lazy_module("sms_plugin.telemetry.logs.reader")

_LOG_PAGE = 200
_STREAMS = {logging.INFO: "stdout", logging.WARNING: "stderr"}


async def start(
    catalog: Catalog,
    name: str,
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    host: str | None = None,
    hosts: list[str] | None = None,
    policy: dict[str, object] | None = None,
    version: int | None = None,
    parameters: dict[str, object] | None = None,
    trigger: str,
    user: str,
) -> str:
    """Creates a flow run of the script's deployment (as the Prefect UI does); returns its id.

    ``hosts`` (exact names, see :mod:`sms_plugin.fleet_hosts`) makes it a fleet run with ``policy``.
    The inputs are checked first (InvalidInput: nothing is created).
    """
    if host is not None and hosts is not None:
        raise InvalidInput("give either one host or a list of hosts, not both")
    if hosts is not None:
        hosts = fleet_hosts.check_names(hosts, {info.name for info in await host_services.listing()})
    script = await catalog.aio.run(get_script, name)
    if policy is not None:
        if hosts is None and not (host is None and script.targets):
            raise InvalidInput("a fleet policy needs a fleet run: give hosts, or start a script that has targets")
        FleetPolicy.parse(policy)
    inputs = resolve(script, args=args, env=env, parameters=parameters)
    secret_names = {spec.name for spec in declared(script) if spec.secret}
    single_instance = script.single_instance
    if version is not None:
        await catalog.aio.run(get_version, name, version)
    run_parameters: dict[str, object] = {"script": name}
    given = {"args": args, "env": env or None, "host": host, "hosts": hosts, "policy": policy, "version": version,
             "parameters": inputs.parameters or None}
    for key, value in given.items():
        if value is not None:
            run_parameters[key] = value
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(deployment_name(name))
        except ObjectNotFound:
            raise NotFound(f"script {name!r} has no Prefect deployment; run `sms sync`") from None
        if single_instance == "reject":
            await refuse_second_run(client, name, deployment.id)
        if inputs.parameters:
            run_parameters["parameters"] = await run_secrets.stash(client, name, inputs.parameters, secret_names)
        stashed = run_secrets.references(run_parameters.get("parameters") or {})
        try:
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id, parameters=run_parameters, tags=origin_tags(trigger, user)
            )
        except Exception:
            await run_secrets.discard(client, stashed)  # no run: its secrets must not stay behind
            raise
    return str(flow_run.id)


async def _read_flow_run(client: PrefectClient, run_id: str) -> FlowRun:
    try:
        return await client.read_flow_run(UUID(run_id))
    except (ValueError, ObjectNotFound):
        raise NotFound(f"no run with id {run_id!r}") from None


async def script_and_hosts(catalog: Catalog, run_id: str) -> tuple[str, list[str]]:
    """The script a run runs and its hosts: those it was started on (``hosts``, ``host``), else those
    it runs on (a script with ``targets``: its host executions, or what the selector picks before it
    started), else the script's own host (the empty string when the script was removed since).
    NotFound for a run that is no script's."""
    async with get_client() as client:
        flow_run = await _read_flow_run(client, run_id)
    script, host, hosts = (flow_run.parameters.get(key) for key in ("script", "host", "hosts"))
    if not isinstance(script, str):
        raise NotFound(f"run {run_id} does not run an SMS script")
    if isinstance(hosts, list):
        return script, [str(name) for name in hosts]
    if host is not None:
        return script, [str(host)]
    try:
        entry = await catalog.aio.run(get_script, script)
    except NotFound:
        return script, [""]
    if not entry.targets:
        return script, [str(entry.host)]
    started = [row.host for row in await catalog.aio.run(host_executions, run_id)]
    return script, started or [info.name for info in await selected_hosts(catalog, entry.targets)]


async def result(catalog: Catalog, run_id: str) -> RunResult:
    """The run's current state, exit code and output tail."""
    async with get_client() as client:
        flow_run = await _read_flow_run(client, run_id)
    try:
        record = await catalog.aio.run(get_run, run_id)
        exit_code, tail = record.exit_code, record.output_tail.splitlines()
    except NotFound:
        exit_code, tail = None, []
    hosts = sorted((_host_result(row) for row in await catalog.aio.run(host_executions, run_id)), key=lambda h: h.host)
    state = flow_run.state
    return RunResult(
        run_id=run_id,
        state=state.type.value if state else "UNKNOWN",
        message=(state.message or "") if state else "",
        exit_code=exit_code,
        output_tail=tail,
        hosts=tuple(hosts),
    )


def _host_result(row: HostExecutionRecord) -> HostResult:
    seconds = (row.ended_at - row.started_at).total_seconds() if row.started_at and row.ended_at else None
    return HostResult(row.host, row.state, row.exit_code, seconds, row.message)


async def wait(catalog: Catalog, run_id: str, *, timeout: float | None = None, poll: float = 0.5) -> RunResult:
    """Waits until the run reaches a final state (retries included) and returns its result."""
    async with asyncio.timeout(timeout):
        while True:
            async with get_client() as client:
                flow_run = await _read_flow_run(client, run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return await result(catalog, run_id)
            await asyncio.sleep(poll)


async def stop(run_id: str) -> str:
    """Asks Prefect to cancel the run (the worker kills the remote process group); returns the new state."""
    async with get_client() as client:
        flow_run = await _read_flow_run(client, run_id)
        state = flow_run.state
        if state is not None and state.is_final():
            raise Conflict(f"run {run_id} has already ended ({state.type.value})")
        not_started = state is None or state.is_scheduled() or state.is_pending()
        new_state = Cancelled(message="Stopped before it started") if not_started else Cancelling()
        await client.set_flow_run_state(UUID(run_id), new_state, force=True)
    return new_state.type.value


async def logs(
    run_id: str, *, follow: bool = False, host: str | None = None, poll: float = 0.5, offset: int = 0,
    timeout: float | None = None,
) -> AsyncIterator[LogLine]:
    """The run's log lines, oldest first (only ``host``'s, if given), after the first ``offset``; with
    ``follow``, until the run has ended (TimeoutError once it has not after ``timeout`` seconds).

    With ``SMS_ELASTICSEARCH_URL`` set: the script's output lines from Elasticsearch (every line,
    paged); otherwise Prefect's run log (output and SMS's own messages, within Prefect's limits).
    A host's lines in Prefect's run log are those of its task run (named after the host).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    async def over() -> bool:
        """True once the run has ended; TimeoutError past the deadline."""
        if await ended(run_id):
            return True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} has not ended after {timeout:g} s")
        return False

    if current().logs.elasticsearch_url:
        async with get_client() as client:
            await _read_flow_run(client, run_id)  # an unknown run is an error, not silence
        skipped = 0
        async for entry in log_reader.run_output(run_id, follow=follow, ended=over, host=host):
            if skipped < offset:  # Elasticsearch pages by search_after, not by offset
                skipped += 1
                continue
            yield LogLine(entry.timestamp, entry.level, entry.message, entry.host, entry.stream)
        return
    seen = offset
    while True:
        finished_now = await over() or not follow  # read first: no line after it is missed
        async with get_client() as client:
            where, keep = await _host_filter(client, run_id, host)
            while page := await client.read_logs(where, limit=_LOG_PAGE, offset=seen, sort=LogSort.TIMESTAMP_ASC):
                seen += len(page)
                for log in page:  # the script's output comes from OUTPUT_LOGGER, its stream in the level
                    if keep(log.message):
                        stream = _STREAMS.get(log.level) if log.name == OUTPUT_LOGGER else None
                        message = log.message
                        if host is not None and stream is not None and message.startswith(f"[{host}] "):
                            message = message[len(host) + 3:]  # one host's own bytes: no fleet prefix
                        yield LogLine(log.timestamp, logging.getLevelName(log.level), message, host, stream)
        if finished_now:
            return
        await asyncio.sleep(poll)


async def _host_filter(client: PrefectClient, run_id: str, host: str | None) -> tuple[LogFilter, Callable[[str], bool]]:
    """The run's log lines, or ``host``'s: those of its task runs (a single-host run, a small fleet
    run), else the lines that start with ``[host] `` (a fleet run without task runs; Prefect's text
    search narrows them, which matches any case and anywhere: the start is checked here)."""
    where = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)]))
    if host is None:
        return where, lambda message: True
    if task_runs := await _host_task_runs(client, run_id, host):
        where.task_run_id = LogFilterTaskRunId(any_=task_runs)
        return where, lambda message: True
    prefix = f"[{host}] "
    where.text = LogFilterTextSearch(query=f'"{prefix.strip()}"')
    return where, lambda message: message.startswith(prefix)


async def _host_task_runs(client: PrefectClient, run_id: str, host: str) -> list[UUID]:
    """The ids of the run's task runs on ``host`` (one per attempt; none before it started there)."""
    task_runs = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])),
        task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[host])),
    )
    return [task_run.id for task_run in task_runs]


async def ended(run_id: str) -> bool:
    """True once the run is in a final state."""
    async with get_client() as client:
        state = (await _read_flow_run(client, run_id)).state
    return state is not None and state.is_final()
