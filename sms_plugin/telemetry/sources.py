"""Reading run facts from Prefect: flow runs and stored events (a rebuild), live events (a stream).

A run's ``script`` is its ``script`` parameter; its ``host`` the ``host`` parameter, else the
``host:<name>`` tag its deployment gives it (``sms_plugin.deploy``), else ``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from cronsim import CronSim
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

from sms_plugin import run_events
from sms_plugin.deploy import FLOW_NAME
from sms_plugin.telemetry.metrics import TERMINAL, RunFinished, RunMetrics, RunState, TransportFailed

log = logging.getLogger("sms.exporter")

RUN_STATE_PREFIX = "prefect.flow-run."
HOST_TAG = "host:"
FLEET_TAG = "fleet"
"""The tag of a script's deployment whose script targets a selector (``sms_plugin.deploy``)."""
FLEET = "fleet"
UNKNOWN = "unknown"
_PAGE = 200
_EVENT_PAGE = 50  # the most /events/filter returns at once


def labels_of(flow_run: FlowRun) -> tuple[str, str]:
    """(script, host) of a run of ``run-script``; the host of a fleet run is ``fleet`` (its hosts are
    counted one by one by ``sms_host_executions``)."""
    parameters = flow_run.parameters or {}
    tagged = [tag.removeprefix(HOST_TAG) for tag in flow_run.tags if tag.startswith(HOST_TAG)]
    fleet = bool(parameters.get("hosts")) or (FLEET_TAG in flow_run.tags and not parameters.get("host"))
    host = parameters.get("host") or (FLEET if fleet else tagged[0] if tagged else UNKNOWN)
    return str(parameters.get("script") or UNKNOWN), str(host)


def running_seconds(start_time: datetime | None, until: datetime) -> float:
    """Seconds from a run's start (its first Running) to ``until``; 0 if it never ran.

    Computed from two stored timestamps, not ``total_run_time``, which Prefect may not have
    updated yet when the state's event arrives: a live count and a rebuild must agree."""
    if start_time is None:
        return 0.0
    return max(0.0, (until - start_time).total_seconds())


def state_timestamp(event: Event) -> datetime:
    """When the state a ``prefect.flow-run.<State>`` event announces was entered."""
    stamp = event.resource.get("prefect.state-timestamp")
    return datetime.fromisoformat(stamp) if stamp else event.occurred


def current_state(flow_run: FlowRun) -> RunState | None:
    """The run's current state as a fact (None if it has none)."""
    state = flow_run.state
    if state is None:
        return None
    script, host = labels_of(flow_run)
    return RunState(
        state_id=str(state.id),
        run_id=str(flow_run.id),
        script=script,
        host=host,
        state_type=state.type.value,
        timestamp=state.timestamp,
        duration_seconds=running_seconds(flow_run.start_time, state.timestamp),
    )


def is_run_script_state(event: Event) -> bool:
    """A state event of a flow run of the ``run-script`` flow (not, e.g., a heartbeat)."""
    return event.event.startswith(RUN_STATE_PREFIX) and "prefect.state-type" in event.resource and any(
        related.role == "flow" and related.name == FLOW_NAME for related in event.related
    )


def state_from_event(event: Event, flow_run: FlowRun) -> RunState:
    """The state a ``prefect.flow-run.<State>`` event announces; labels and duration from ``flow_run``."""
    script, host = labels_of(flow_run)
    timestamp = state_timestamp(event)
    return RunState(
        state_id=str(event.id),  # Prefect uses the state's id as the event's id
        run_id=str(flow_run.id),
        script=script,
        host=host,
        state_type=event.resource["prefect.state-type"],
        timestamp=timestamp,
        duration_seconds=running_seconds(flow_run.start_time, timestamp),
    )


def run_id_of(event: Event) -> str:
    return event.resource.id.removeprefix(RUN_STATE_PREFIX)


def apply_sms_event(metrics: RunMetrics, event: Event) -> bool:
    """Counts one of SMS's own events; False if seen already, not one of them, or malformed (logged
    and skipped: whoever may write to Prefect can emit one, and a rebuild must not stop at it)."""
    try:
        return _apply_sms_event(metrics, event)
    except (ValueError, KeyError, TypeError) as error:
        log.warning("skipped event %s (%s): %s: %s", event.id, event.event, type(error).__name__, error)
        return False


def _apply_sms_event(metrics: RunMetrics, event: Event) -> bool:
    resource, payload = event.resource, event.payload
    if event.event == run_events.RUN_FINISHED:
        lines = {str(k): int(v) for k, v in dict(payload.get("lines") or {}).items()}
        return metrics.apply_finished(RunFinished(
            event_id=str(event.id), script=resource.get("sms.script", UNKNOWN), host=resource.get("sms.host", UNKNOWN),
            exit_code=int(payload["exit_code"]), occurred=event.occurred, lines=lines,
            timed_out=bool(payload.get("timed_out")),
        ))
    if event.event == run_events.TRANSPORT_ERROR:
        return metrics.apply_transport_error(TransportFailed(
            event_id=str(event.id), host=resource.get("sms.host", UNKNOWN), kind=str(payload.get("kind", UNKNOWN)),
            occurred=event.occurred, script=resource.get("sms.script", UNKNOWN),
            unreachable=payload.get("unreachable"),
        ))
    return False


async def _flow_runs(client: PrefectClient, run_filter: FlowRunFilter) -> AsyncIterator[FlowRun]:
    flows = FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
    offset = 0
    while True:
        page = await client.read_flow_runs(flow_filter=flows, flow_run_filter=run_filter,
                                           sort=FlowRunSort.END_TIME_DESC, limit=_PAGE, offset=offset)
        for flow_run in page:
            yield flow_run
        if len(page) < _PAGE:
            return
        offset += _PAGE


async def stored_events(client: PrefectClient, prefix: str, since: datetime) -> AsyncIterator[Event]:
    """Prefect's stored events named ``prefix...`` that occurred since ``since``, oldest first."""
    event_filter = EventFilter(
        event=EventNameFilter(prefix=[prefix]),
        occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(days=1)),
        order=EventOrder.ASC,
    )
    page = await client.read_events(filter=event_filter, limit=_EVENT_PAGE)
    while True:
        for event in page.events:
            yield event
        if not page.next_page:
            return
        page = await client.read_events_page(next_page_url(client, str(page.next_page)))


def next_page_url(client: PrefectClient, next_page: str) -> str:
    """The next page of events on the client's own API URL. Prefect builds the link from its
    host alone, without ``PREFECT_SERVER_API_BASE_PATH`` (``/prefect/api`` behind the gateway),
    so followed as it is it answers 404 there; only its query (the page token) is kept.

    >>> from types import SimpleNamespace
    >>> next_page_url(SimpleNamespace(api_url="http://p:4200/prefect/api/"), "http://p:4200/api/events/filter/next?page-token=eyJ")
    'http://p:4200/prefect/api/events/filter/next?page-token=eyJ'
    """
    return f"{str(client.api_url).rstrip('/')}/events/filter/next?{urlsplit(next_page).query}"


async def rebuild(metrics: RunMetrics, client: PrefectClient) -> None:
    """Fills fresh ``metrics`` from Prefect's history: runs that ended since ``metrics.since`` and
    runs in progress (flow runs), SMS's events since then (Prefect's event store)."""
    assert metrics.since is not None, "a rebuild reads a bounded history"
    active = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    async for flow_run in _flow_runs(client, active):
        if fact := current_state(flow_run):
            metrics.apply_state(fact)
    await recount(metrics, client, metrics.since)
    await older_successes(metrics, client)


async def recount(metrics: RunMetrics, client: PrefectClient, since: datetime) -> None:
    """Counts what ended or happened since ``since``: runs that ended (flow runs) and SMS's events
    (Prefect's event store). A fact counted already is skipped (by its id), so reading a span again
    only adds what was missing, e.g. events Prefect stored after a rebuild had read its store."""
    terminal = FlowRunFilterStateType(any_=[StateType(state_type) for state_type in sorted(TERMINAL)])
    ended = FlowRunFilter(end_time=FlowRunFilterEndTime(after_=since), state=FlowRunFilterState(type=terminal))
    async for flow_run in _flow_runs(client, ended):
        if fact := current_state(flow_run):
            metrics.apply_state(fact)
    async for event in stored_events(client, run_events.PREFIX, since):
        apply_sms_event(metrics, event)


async def older_successes(metrics: RunMetrics, client: PrefectClient) -> None:
    """Scripts (deployments) without a success in the window: their newest success, however old,
    so that ``sms_script_last_success_timestamp_seconds`` survives a restart (not counted as a run)."""
    completed = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
    for deployment in await _deployments(client):
        if deployment.name in metrics.scripts_with_success:
            continue
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]), state=completed),
            sort=FlowRunSort.END_TIME_DESC, limit=1)
        if found and found[0].state is not None:
            metrics.note_success(deployment.name, found[0].state.timestamp)


async def _deployments(client: PrefectClient) -> list[DeploymentResponse]:
    """The scripts' deployments (one per script, named after it)."""
    return await client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))


def _interval_seconds(schedule: object, at: datetime) -> float | None:
    if isinstance(schedule, IntervalSchedule):
        return schedule.interval.total_seconds()
    if isinstance(schedule, CronSchedule):
        times = CronSim(schedule.cron, at)
        first = next(times)
        return (next(times) - first).total_seconds()
    return None


async def expected_intervals(client: PrefectClient) -> dict[str, float]:
    """Script → shortest interval of its active schedules (unpaused scripts with schedules only)."""
    found: dict[str, float] = {}
    at = datetime.now(UTC)
    for deployment in await _deployments(client):
        if deployment.paused:
            continue
        intervals = [seconds for entry in deployment.schedules if entry.active
                     if (seconds := _interval_seconds(entry.schedule, at)) is not None]
        if intervals:
            found[deployment.name] = min(intervals)
    return found
