"""``sms worker``: start an in-process ``sms`` worker on the SMS work pool (docs/worker.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sms_plugin.errors import SMSError
from sms_plugin.lazy import lazy_module
from sms_plugin.settings import work_pool_name

if TYPE_CHECKING:
    import asyncio
else:  # loaded when the worker starts
    asyncio = lazy_module("asyncio")


def worker(
    pool: Annotated[str | None, typer.Option("--pool", help="Work pool (default: SMS_WORK_POOL or sms).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs executing at once in this worker.")] = 500,
    name: Annotated[str | None, typer.Option("--name", help="Worker name (default: a random one).")] = None,
) -> None:
    """Run script runs of the work pool inside this process, many at once (Ctrl-C stops)."""
    from prefect.settings import PREFECT_API_URL

    from sms_plugin.worker import SMSWorker

    if not PREFECT_API_URL.value():
        raise SMSError("PREFECT_API_URL is not set: point it at the Prefect API the worker should serve")
    chosen = pool or work_pool_name()
    asyncio.run(SMSWorker(work_pool_name=chosen, limit=limit, name=name).start(printer=typer.echo))
