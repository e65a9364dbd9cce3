"""``sms worker``: start an SMS worker on the SMS work pool (docs/worker.md).

SIGINT or SIGTERM cancels the runs in flight and waits (at most SMS_WORKER_STOP_SECONDS) until
each one's process group is killed on its host and the run is Cancelled, then stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sms_plugin.errors import SMSError
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    import asyncio
else:  # loaded when the worker starts
    asyncio = lazy_module("asyncio")


def worker(
    pool: Annotated[str | None, typer.Option("--pool", help="Work pool (default: SMS_WORK_POOL or sms).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs executing at once in this worker.")] = 500,
    name: Annotated[str | None, typer.Option("--name", help="Worker name (default: a random one).")] = None,
    kind: Annotated[
        str | None, typer.Option("--type", help="sms (runs in this process) or sms-process (default: SMS_WORKER_TYPE or sms).")
    ] = None,
) -> None:
    """Run script runs of the work pool, many at once (Ctrl-C cancels the runs in flight and stops)."""
    from prefect.settings import PREFECT_API_URL

    from sms_plugin.settings import WORKER_TYPES, current
    from sms_plugin.worker import SMSProcessWorker, SMSWorker
    from sms_plugin.worker.shutdown import serve

    if not PREFECT_API_URL.value():
        raise SMSError("PREFECT_API_URL is not set: point it at the Prefect API the worker should serve")
    configured = current().worker
    chosen_type = kind or configured.type
    if chosen_type not in WORKER_TYPES:
        raise SMSError(f"--type {chosen_type!r}: use sms or sms-process")
    worker_class = SMSWorker if chosen_type == "sms" else SMSProcessWorker
    instance = worker_class(work_pool_name=pool or configured.pool, limit=limit, name=name)
    asyncio.run(serve(instance, stop_seconds=configured.stop_seconds, printer=typer.echo))
