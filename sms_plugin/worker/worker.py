"""``SMSWorker``: a Prefect worker (type ``sms``) that executes its pool's flow runs in-process.

Prefect's :class:`~prefect.workers.base.BaseWorker` does the pool work: registering the worker,
heartbeats, polling, claiming a run by proposing Pending (the server refuses a second Pending, so
several workers on one pool never run a run twice), the ``--limit`` of concurrent runs, and one
events subscription for ``prefect.flow-run.Cancelling`` of the pool. This class adds what the
process worker does with a subprocess per run, with an asyncio task per run instead:

- :meth:`run` imports the deployment's flow once and runs it with
  ``prefect.flow_engine.run_flow(flow, flow_run=flow_run, return_type="state")`` on the worker's
  run loop (:mod:`sms_plugin.worker.runloop`); the run's infrastructure id is ``sms:<host>:<pid>``;
- a cancelled run's task is cancelled: the transport kills the remote process group and the
  engine ends the run Cancelled, running ``on_cancellation`` hooks (:mod:`sms_plugin.worker.engine`);
- new scheduled runs of the pool arrive through the event stream and are submitted at once
  (:mod:`sms_plugin.worker.dispatch`); polling remains the fallback.

Example::

    prefect work-pool create scripts --type sms
    prefect worker start --pool scripts --type sms --limit 500
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect import Flow, get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect._internal.observers import FlowRunCancellingObserver
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound, TerminationSignal
from prefect.flow_engine import run_flow
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import get_current_settings
from prefect.states import Cancelled, State
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from sms_plugin.settings import current
from sms_plugin.worker import engine, prefect_hooks
from sms_plugin.worker.dispatch import watch_scheduled_runs
from sms_plugin.worker.guard import base_job_template, check_job_variables
from sms_plugin.worker.predecessors import EndsPredecessorsRuns
from sms_plugin.worker.runloop import RunLoop


class SMSWorkerResult(BaseWorkerResult):
    """How a run's task ended: status 0 when Prefect's engine reported the run's final state."""


class SMSJobConfiguration(BaseJobConfiguration):
    """A run's job configuration, made without what only a child process would use.

    Runs execute in the worker's own process: Prefect's settings are not rendered as environment
    variables for each run (a tenth of the worker's CPU per run when measured), and the run's
    deployment and flow are not read again for their job variables (two requests per run on the
    way to the script's start); the worker's "submitted" event then names the flow run and work
    pool, not the deployment. A run carrying job variables is refused (:mod:`sms_plugin.worker.guard`).
    """

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        return {}

    @classmethod
    async def resolve_for_flow_run(
        cls,
        flow_run: FlowRun,
        *,
        client: PrefectClient,
        work_pool: WorkPool,
        worker_name: str,
        worker_id: UUID | None = None,
        deployment: DeploymentResponse | None = None,
    ) -> SMSJobConfiguration:
        check_job_variables(flow_run)
        configuration = await cls.from_template_and_values(
            base_job_template=work_pool.base_job_template, values=dict(flow_run.job_variables or {}), client=client
        )
        configuration.prepare_for_flow_run(
            flow_run=flow_run, deployment=deployment, work_pool=work_pool, worker_name=worker_name, worker_id=worker_id
        )
        return configuration


class SMSWorker(EndsPredecessorsRuns, BaseWorker[SMSJobConfiguration, BaseVariables, SMSWorkerResult]):
    """Runs the flow runs of an ``sms`` work pool as asyncio tasks of this process."""

    type = "sms"
    job_configuration = SMSJobConfiguration
    job_configuration_variables = BaseVariables
    _description = (
        "Runs SMS script runs as asyncio tasks inside the worker process: hundreds at once, "
        "no process per run. The flows must be importable in the worker's environment."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        prefect_hooks.check()  # before anything talks to Prefect: refuse a Prefect SMS does not fit
        super().__init__(*args, **kwargs)
        prefect_hooks.check_worker(self)
        self._controls: dict[UUID, engine.RunControl] = {}
        self._entrypoints: dict[UUID, str] = {}
        self._flows: dict[str, Flow[..., Any]] = {}
        self._run_loop: RunLoop | None = None
        self._wake = asyncio.Event()
        self._services: list[asyncio.Task[None]] = []
        # Runs on their way to their script's start, at most SMS_WORKER_STARTING at a time in each
        # phase: claiming (this loop) and starting (the run loop). See _submit_run and _execute.
        starting = current().worker.starting
        self._claiming = asyncio.Semaphore(starting)
        self._starting = asyncio.Semaphore(starting)

    @classmethod
    def get_default_base_job_template(cls) -> dict[str, Any]:
        """The template ``prefect work-pool create --type sms`` gives a pool: no variables."""
        return base_job_template()

    @property
    def infrastructure_id(self) -> str:
        """What the worker writes as each run's infrastructure id: ``sms:<hostname>:<pid>``."""
        return f"sms:{socket.gethostname()}:{os.getpid()}"

    @property
    def running(self) -> int:
        """How many runs this worker is executing now."""
        return len(self._controls)

    # ------------------------------------------------------------------ lifecycle

    async def setup(self) -> None:
        prefect_hooks.install()
        self._run_loop = RunLoop(f"sms-runs-{self.name}")
        await super().setup()

    async def _initialize_after_sync(self) -> None:
        await super()._initialize_after_sync()
        if self._work_pool is not None and not self._services:
            self._services = [
                asyncio.create_task(watch_scheduled_runs(self._work_pool.id, self._wake.set)),
                asyncio.create_task(self._submit_on_wake()),
            ]

    async def _setup_cancellation_observer(self) -> None:
        """One observer of ``prefect.flow-run.Cancelling`` events for the pool (websocket, with
        polling of the runs in flight as fallback), always on: Prefect enables it for its own
        workers only with ``PREFECT_WORKER_ENABLE_CANCELLATION``, and only for pending runs."""
        if self._cancelling_observer is not None or self._work_pool is None:
            return
        self._cancelling_observer = await self._exit_stack.enter_async_context(
            _RunningObserver(
                running=lambda flow_run_id: flow_run_id in self._controls,
                on_cancelling=lambda flow_run_id: self._runs_task_group.start_soon(self._cancel_run, flow_run_id),
                polling_interval=get_current_settings().worker.cancellation_poll_seconds,
                event_filter=EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.Cancelling"]),
                    any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{self._work_pool.id}"]),
                ),
            )
        )

    async def teardown(self, *exc_info: Any) -> None:
        for service in self._services:
            service.cancel()
        self._services = []
        with anyio.CancelScope(shield=True):
            await self._stop_runs()
        await super().teardown(*exc_info)

    def runs_in_flight(self) -> list[UUID]:
        """The flow runs this worker is executing now."""
        return list(self._controls)

    async def _stop_runs(self) -> None:
        """Cancels the runs still going (``sms worker`` has cancelled them already; this is for a
        worker stopped otherwise): the engine kills each one's process group on its host and ends
        it Cancelled. Waits at most SMS_WORKER_STOP_SECONDS for them."""
        loop = self._run_loop
        if loop is None:
            return
        for control in list(self._controls.values()):
            loop.loop.call_soon_threadsafe(control.cancel)
        deadline = asyncio.get_running_loop().time() + current().worker.stop_seconds
        while loop.tasks() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        loop.close()
        self._run_loop = None

    async def _submit_on_wake(self) -> None:
        """Polls the pool as soon as an event says a run is due (events arriving meanwhile are
        folded into the next poll)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.get_and_submit_flow_runs()
            except Exception:  # noqa: BLE001 - the regular poll loop reports API trouble
                self._logger.debug("event-driven poll failed", exc_info=True)

    # ------------------------------------------------------------------ runs

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Claims the run (Pending) and hands it to :meth:`run`, a few runs at a time: when a
        thousand runs are due at once, each one's requests would otherwise queue behind all the
        others' at the Prefect server until they time out."""
        async with self._claiming:
            await super()._submit_run(flow_run)

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """No Submitting state: the run starts in this process at once (Pending → Running), and
        a state transition is the costliest request a run makes of Prefect's server."""

    async def run(
        self,
        flow_run: FlowRun,
        configuration: SMSJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> SMSWorkerResult:
        """Executes ``flow_run`` on the run loop and returns when Prefect has its final state."""
        assert self._run_loop is not None, "the worker is not set up"
        flow = await self._flow_for(flow_run)  # before started(): a failure here marks the run Crashed
        control = engine.RunControl()
        self._controls[flow_run.id] = control
        if self._cancelling_observer is not None:
            self._cancelling_observer.add_in_flight_flow_run_id(flow_run.id)
        if task_status is not None:
            task_status.started(self.infrastructure_id)
        status = 0
        try:
            await self._run_loop.run(_execute(flow, flow_run, control, self._starting))
        except Exception:
            self.get_flow_run_logger(flow_run).exception("the flow run's engine failed")
            status = 1  # BaseWorker proposes Crashed
        finally:
            self._controls.pop(flow_run.id, None)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)
        return SMSWorkerResult(identifier=self.infrastructure_id, status_code=status)

    async def _flow_for(self, flow_run: FlowRun) -> Flow[..., Any]:
        """The flow of the run's deployment, imported once per entrypoint (no pull steps)."""
        if flow_run.deployment_id is None:
            raise ValueError("the sms worker runs deployments only; this flow run has none")
        entrypoint = self._entrypoints.get(flow_run.deployment_id)
        if entrypoint is None:
            deployment = await self.client.read_deployment(flow_run.deployment_id)
            if not deployment.entrypoint:
                raise ValueError(f"deployment {deployment.name!r} has no entrypoint")
            entrypoint = self._entrypoints[flow_run.deployment_id] = deployment.entrypoint
        flow = self._flows.get(entrypoint)
        if flow is None:
            flow = await asyncio.to_thread(load_flow_from_entrypoint, entrypoint, False)
            self._flows[entrypoint] = flow
        return flow

    async def _cancel_run(self, flow_run_id: UUID) -> None:
        """A Cancelling run of the pool: cancel its task if it runs here (the remote process group
        is killed, the run ends Cancelled); otherwise Prefect's handling of not-started runs."""
        control = self._controls.get(flow_run_id)
        if control is None:
            await super()._cancel_run(flow_run_id)
            return
        assert self._run_loop is not None
        self._run_loop.loop.call_soon_threadsafe(control.cancel)

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: SMSJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """Not-started runs only (see :meth:`_cancel_run`): nothing runs yet, or another worker has it."""
        if infrastructure_pid != self.infrastructure_id:
            raise InfrastructureNotAvailable(f"run belongs to {infrastructure_pid}, not {self.infrastructure_id}")
        raise InfrastructureNotFound(f"no run of {infrastructure_pid} is executing")


class _RunningObserver(FlowRunCancellingObserver):
    """Prefect's observer of Cancelling runs, watching a run until it has *ended* here: BaseWorker
    stops watching a run once it is submitted, which suits a subprocess, not a task."""

    def __init__(self, *, running: Callable[[UUID], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._running = running

    def remove_in_flight_flow_run_id(self, flow_run_id: UUID) -> None:
        if not self._running(flow_run_id):
            super().remove_in_flight_flow_run_id(flow_run_id)


async def _execute(
    flow: Flow[..., Any], flow_run: FlowRun, control: engine.RunControl, starting: asyncio.Semaphore
) -> State | None:
    """The run's task on the run loop: Prefect's engine, with the run's parameters and states.
    It holds a place of ``starting`` until its script runs on the host (or the run ended)."""
    control.bind()
    acquired = False
    try:
        if not control.cancel_requested:
            await starting.acquire()
            acquired = True
    except asyncio.CancelledError:
        if not control.cancel_requested:
            raise
    if control.cancel_requested:  # cancelled between being claimed and starting
        if acquired:
            starting.release()
        async with get_client() as client:
            await client.set_flow_run_state(flow_run.id, Cancelled(message="Cancelled before it started"), force=True)
        return None
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            starting.release()

    control.on_started = release
    try:
        return await run_flow(flow, flow_run=flow_run, return_type="state")  # type: ignore[misc]
    except TerminationSignal:
        if control.cancel_requested:  # the engine has reported Cancelled
            return None
        raise
    finally:
        release()
