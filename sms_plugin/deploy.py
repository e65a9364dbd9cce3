"""Catalog → Prefect: each script is the deployment ``run-script/<script>`` in the SMS work pool.

The deployment points at the installed flow by module path (no code storage, no pull steps): SMS
names the flows by entrypoint (``RUN_SCRIPT_ENTRYPOINT``, the same flows ``prefect.yaml`` names by
file) and lets Prefect load them, so ``sms_plugin`` never imports ``flows``. The deployment
carries the script name as its parameter default, the script's own parameter schema (its
declared parameters and allowed environment, enforced by Prefect's server; the Prefect UI's Run
form shows them), the script's tags plus ``host:<host>``, and its schedules. A disabled script's
deployment is paused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import suppress
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate, WorkPoolUpdate
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron, Interval, Schedule

from sms_plugin.catalog import Script
from sms_plugin.limits import deployment_concurrency
from sms_plugin.parameters import deployment_schema
from sms_plugin.settings import current

FLOW_NAME = "run-script"
RUN_SCRIPT_ENTRYPOINT = "flows.run_script.run_script"
"""The flow every script's deployment runs, as the module path workers import it by."""
PARALLEL_DELETES = 8
"""Deployment deletions a sync has in flight at once (hundreds of orphans take seconds, not minutes)."""
HOUSEKEEPING_ENTRYPOINT = "flows.housekeeping.housekeeping"
SIMPLE_VERSION = "prefect:simple"
"""A deployment's version is the flow's own: Prefect would otherwise ask git, in whatever folder the
caller runs in, for a commit to call the version (several git processes per deployment)."""


def _flow(entrypoint: str) -> Flow[..., Any]:
    """The flow at a module-path entrypoint; an import error is raised, not replaced by a placeholder."""
    return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)


def deployment_name(script_name: str) -> str:
    """The full name Prefect knows the script's deployment by, e.g. ``run-script/backup``."""
    return f"{FLOW_NAME}/{script_name}"


def _schedules(script: Script) -> list[Schedule]:
    result: list[Schedule] = []
    for entry in script.schedules:
        timezone = entry.get("timezone") or "UTC"
        if entry.get("cron"):
            result.append(Cron(entry["cron"], timezone=timezone))
        else:
            result.append(Interval(timedelta(seconds=entry["interval_seconds"]), timezone=timezone))
    return result


async def ensure_work_pool() -> None:
    """Creates the SMS work pool (type ``SMS_WORKER_TYPE``, default sms) unless it exists, and
    gives it (an existing one too) SMS's base job template, in which no caller can set a command
    or an environment (docs/worker.md#no-command-from-a-caller)."""
    from sms_plugin.worker.guard import base_job_template  # the worker: loaded by writes only

    template = base_job_template()
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(current().worker.pool)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(name=current().worker.pool, type=current().worker.type, base_job_template=template)
                )
            except ObjectAlreadyExists:
                pass
            return
        if pool.base_job_template != template:
            await client.update_work_pool(current().worker.pool, WorkPoolUpdate(base_job_template=template))


def _where(script: Script) -> str:
    return script.host if script.host else f"the hosts '{script.targets}' picks"


async def sync_script(script: Script) -> str:
    """Creates or updates SMS's work pool and the script's deployment; returns the deployment's id."""
    await ensure_work_pool()
    return await apply_script(script)


async def apply_script(script: Script) -> str:
    """Creates or updates the script's deployment in SMS's work pool, which :func:`ensure_work_pool`
    has made (``sync`` checks the pool once for all scripts); returns its id."""
    deployment = RunnerDeployment.from_flow(
        _flow(RUN_SCRIPT_ENTRYPOINT),
        name=script.name,
        schedules=_schedules(script),
        paused=not script.enabled,
        parameters={"script": script.name},
        description=script.description or f"Runs the SMS script {script.name} on {_where(script)}.",
        tags=sorted({*script.tags, f"host:{script.host}" if script.host else "fleet", "sms"}),
        work_pool_name=current().worker.pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        version_type=SIMPLE_VERSION,
        concurrency_limit=deployment_concurrency(script.single_instance),
        enforce_parameter_schema=True,
    )
    deployment_id = await deployment.apply()
    async with get_client() as client:
        await client.update_deployment(deployment_id, DeploymentUpdate(parameter_openapi_schema=deployment_schema(script)))
        existing = await client.read_deployment(deployment_id)
        if existing.schedules and not script.schedules:
            for schedule in existing.schedules:
                await client.delete_deployment_schedule(deployment_id, schedule.id)
    return str(deployment_id)


HOUSEKEEPING_SECONDS = 30


async def sync_housekeeping() -> str:
    """Creates or updates ``sms-housekeeping/every-30s``, which reaps runs whose worker died."""
    await ensure_work_pool()
    deployment = RunnerDeployment.from_flow(
        _flow(HOUSEKEEPING_ENTRYPOINT),
        name=f"every-{HOUSEKEEPING_SECONDS}s",
        interval=HOUSEKEEPING_SECONDS,
        tags=["sms"],
        work_pool_name=current().worker.pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        version_type=SIMPLE_VERSION,
    )
    return str(await deployment.apply())


async def remove_deployment(script_name: str) -> bool:
    """Deletes the script's deployment; False if it had none."""
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(deployment_name(script_name))
        except ObjectNotFound:
            return False
        await client.delete_deployment(deployment.id)
        return True


async def deployed_scripts() -> dict[str, UUID]:
    """The scripts that have a deployment in SMS's work pool: name → deployment id, read page by
    page (the server answers at most its default limit, 200, at once)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, WorkPoolFilter, WorkPoolFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    found: dict[str, UUID] = {}
    read = 0
    async with get_client() as client:
        while page := await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[current().worker.pool])),
            sort=DeploymentSort.NAME_ASC,
            offset=read,
        ):
            found |= {d.name: d.id for d in page}
            read += len(page)
    return found


async def delete_deployments(ids: Iterable[UUID]) -> None:
    """Deletes these deployments, ``PARALLEL_DELETES`` requests at a time; one already gone is fine."""
    limit = asyncio.Semaphore(PARALLEL_DELETES)
    async with get_client() as client:

        async def delete(deployment_id: UUID) -> None:
            async with limit:
                with suppress(ObjectNotFound):
                    await client.delete_deployment(deployment_id)

        await asyncio.gather(*(delete(deployment_id) for deployment_id in ids))
