"""``SMSProcessWorker`` (type ``sms-process``): Prefect's process worker, one process per run,
that refuses job variables (:mod:`sms_plugin.worker.guard`).

Prefect's own ``process`` worker runs a flow run's ``job_variables.command`` instead of the flow
and passes ``env`` to it; this type runs SMS's flow and nothing else. Opt in with
``SMS_WORKER_TYPE=sms-process`` (docs/worker.md).

Example::

    prefect work-pool create scripts --type sms-process
    prefect worker start --pool scripts --type sms-process
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio.abc
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.states import Cancelled
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from sms_plugin.catalog import Catalog
from sms_plugin.errors import NotFound
from sms_plugin.reaper import reap_run
from sms_plugin.worker import prefect_hooks
from sms_plugin.worker.guard import base_job_template, check_job_variables
from sms_plugin.worker.predecessors import EndsPredecessorsRuns


SETTLE_POLL_SECONDS = 0.5


def process_alive(pid: int) -> bool:
    """Process ``pid`` of this machine exists and has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class SMSProcessJobConfiguration(ProcessJobConfiguration):
    """The process worker's job configuration, for runs without job variables only."""

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
    ) -> SMSProcessJobConfiguration:
        check_job_variables(flow_run)
        return await super().resolve_for_flow_run(  # type: ignore[return-value]
            flow_run, client=client, work_pool=work_pool, worker_name=worker_name, worker_id=worker_id,
            deployment=deployment,
        )


class SMSProcessWorker(EndsPredecessorsRuns, ProcessWorker):
    """Runs each flow run of its pool in a process of its own, refusing job variables."""

    type = "sms-process"
    job_configuration = SMSProcessJobConfiguration
    _description = "Prefect's process worker for SMS pools: one process per run, no command or env from callers."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        prefect_hooks.check()  # before anything talks to Prefect: refuse a Prefect SMS does not fit
        super().__init__(*args, **kwargs)
        self._in_flight: set[UUID] = set()

    def runs_in_flight(self) -> list[UUID]:
        """The flow runs whose process this worker has started and not yet seen end."""
        return list(self._in_flight)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        """Prefect's process worker's ``run``, remembering the run while its process lives; a run
        still Cancelling when its process has exited is settled (:meth:`settle_cancelling`) without
        waiting for Prefect, which returns only after running the run's hooks in a new process."""
        self._in_flight.add(flow_run.id)
        started = anyio.TASK_STATUS_IGNORED if task_status is None else task_status
        watcher: asyncio.Task[None] | None = None

        class Started:
            def started(self_, pid: int) -> None:  # noqa: N805 - the worker is `self`
                nonlocal watcher
                watcher = asyncio.create_task(self._settle_when_gone(flow_run.id, pid))
                started.started(pid)

        try:
            return await super().run(flow_run, configuration, Started())  # type: ignore[arg-type]
        finally:
            if watcher is not None:
                watcher.cancel()
            self._in_flight.discard(flow_run.id)

    async def _settle_when_gone(self, flow_run_id: UUID, pid: int) -> None:
        while process_alive(pid):
            await asyncio.sleep(SETTLE_POLL_SECONDS)
        await self.settle_cancelling(flow_run_id)

    async def settle_cancelling(self, flow_run_id: UUID) -> None:
        """Ends Cancelled a run whose process has exited while it was Cancelling, after killing what
        is left of it on its hosts (the flow's ``on_cancellation`` hook, run here). Prefect's runner
        would run that hook in a new process and only then end the run: minutes on a busy machine,
        during which a stopping worker waits and the run stays Cancelling (docs/worker.md)."""
        flow_run = await self.client.read_flow_run(flow_run_id)
        if flow_run.state is None or flow_run.state.type != StateType.CANCELLING:
            return
        catalog = Catalog()
        try:
            await reap_run(catalog, str(flow_run_id), reason="the run's process exited while Cancelling",
                           actor="sms-process worker")
        except NotFound:
            pass  # the run never reached the point of starting anything
        finally:
            catalog.dispose()
        await self.client.set_flow_run_state(
            flow_run_id, Cancelled(message=flow_run.state.message or "cancelled"), force=True)

    @classmethod
    def get_default_base_job_template(cls) -> dict[str, Any]:
        """The template ``prefect work-pool create --type sms-process`` gives a pool: no variables."""
        return base_job_template()
