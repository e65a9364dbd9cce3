"""Runs that no flow process will end, because the process that held them is gone: crashed in Prefect.

Three kinds, none of which left anything on a host to reap (:mod:`sms_plugin.reaper` deals with
runs that did):

- **Pending, its worker gone**: a worker claimed the run (Pending) and died before the run
  started. Prefect leaves such a run Pending for good. A live sms worker may hold a claimed run
  Pending for minutes while it waits for a start slot, so the run must also be Pending for
  ``SMS_LOST_RUN_SECONDS``, and its worker (the flow run's ``prefect.worker.name`` label) must be
  silent: no heartbeat in the pool for that long and 3 of its heartbeat intervals, or no longer
  in the pool. A worker starting under the name of a dead one ends the runs its predecessor left
  Pending at once (:func:`crash_predecessors_pending`), since the name is alive again.
- **Running, no run record**: the flow died while starting, before it wrote its run record.
- **Running, run record ended**: the flow died after its script's end was recorded but before
  Prefect got the final state (the flow waits for its log lines to be delivered in between).

Running runs wait ``SMS_LOST_RUN_SECONDS`` after their start (or their record's end) too: a live
flow held by an outage of Prefect or the catalog must not be crashed. Runs whose record is
unfinished are the reaper's: their heartbeat tells.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType, Worker
from prefect.states import Crashed

from sms_plugin.catalog import Catalog, get_run
from sms_plugin.deploy import FLOW_NAME
from sms_plugin.errors import NotFound
from sms_plugin.settings import current

WORKER_LABEL = "prefect.worker.name"
"""The flow run label where Prefect's workers write the name of the worker that claimed the run."""
PAGE = 200
"""Runs looked at per kind and round (housekeeping runs every 30 s)."""
DEFAULT_WORKER_HEARTBEAT_SECONDS = 30


def lost_after() -> timedelta:
    """How long a run must look lost before it is crashed (``SMS_LOST_RUN_SECONDS``)."""
    return timedelta(seconds=current().worker.lost_run_seconds)


async def crash_lost_runs(client: PrefectClient, catalog: Catalog, now: datetime, unfinished: set[str]) -> list[str]:
    """Crashes the run-script flow runs of the three kinds above; returns a note per run.
    ``unfinished``: the ids of the run records without an end (the reaper's, read by the caller)."""
    notes = await _crash_running(client, catalog, now, unfinished)
    pending = await _flow_runs(client, StateType.PENDING)
    alive = await _live_workers(client, {run.work_pool_name for run in pending if run.work_pool_name}, now)
    for flow_run in pending:
        if flow_run.state is None or now - flow_run.state.timestamp < lost_after():
            continue
        worker = flow_run.labels.get(WORKER_LABEL)
        if worker is None:
            reason = "it was claimed by a worker that did not say its name and never started it (nothing ran on a host)"
        elif worker not in alive.get(flow_run.work_pool_name or "", set()):
            reason = f"its worker {worker} stopped before it started the run (nothing ran on a host)"
        else:
            continue
        notes.append(await _crash(client, flow_run.id, reason))
    return notes


async def crash_predecessors_pending(client: PrefectClient, pool: str, worker: str, started: datetime) -> list[str]:
    """Crashes the runs of ``pool`` that a worker named ``worker`` moved to Pending before
    ``started`` (when this process, of that name, started): a dead process of the same name
    left them, and none will start them."""
    notes = []
    for flow_run in await _flow_runs(client, StateType.PENDING, pool=pool):
        if (flow_run.labels.get(WORKER_LABEL) == worker and flow_run.state is not None
                and flow_run.state.timestamp < started):
            reason = f"an earlier worker named {worker} stopped before it started the run (nothing ran on a host)"
            notes.append(await _crash(client, flow_run.id, reason))
    return notes


async def _crash_running(client: PrefectClient, catalog: Catalog, now: datetime, unfinished: set[str]) -> list[str]:
    """The Running runs, started ``SMS_LOST_RUN_SECONDS`` ago, that have no run record or an ended
    one (a run whose record is unfinished is not read again: its heartbeat is the reaper's)."""
    notes = []
    for flow_run in await _flow_runs(client, StateType.RUNNING, started_before=now - lost_after()):
        if str(flow_run.id) in unfinished:
            continue
        try:
            record = await catalog.aio.run(get_run, str(flow_run.id))
        except NotFound:
            reason = "its flow process was lost before it recorded the run (nothing ran on a host)"
        else:
            if record.ended_at is None or now - record.ended_at < lost_after():
                continue
            reason = ("its flow process was lost after its script ended, before it reported the run's end "
                      "(the run record has the script's outcome)")
        notes.append(await _crash(client, flow_run.id, reason))
    return notes


async def _flow_runs(
    client: PrefectClient, state: StateType, *, pool: str | None = None, started_before: datetime | None = None
) -> list[FlowRun]:
    return await client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])),
            start_time=FlowRunFilterStartTime(before_=started_before) if started_before else None,
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])) if pool else None,
        limit=PAGE,
    )


async def _live_workers(client: PrefectClient, pools: set[str], now: datetime) -> dict[str, set[str]]:
    """The names of each pool's live workers: a heartbeat within ``SMS_LOST_RUN_SECONDS`` and 3 of
    its intervals. A name missing from its pool's set is silent, or gone from the pool."""
    return {pool: {worker.name for worker in await client.read_workers_for_work_pool(pool) if _alive(worker, now)}
            for pool in pools}


def _alive(worker: Worker, now: datetime) -> bool:
    if worker.last_heartbeat_time is None:
        return False
    interval = worker.heartbeat_interval_seconds or DEFAULT_WORKER_HEARTBEAT_SECONDS
    return now - worker.last_heartbeat_time < max(lost_after(), timedelta(seconds=3 * interval))


async def _crash(client: PrefectClient, flow_run_id: UUID, reason: str) -> str:
    await client.set_flow_run_state(flow_run_id, Crashed(message=f"SMS reaper: {reason}"), force=True)
    return f"{flow_run_id}: {reason}"
