"""The ``sms-housekeeping`` flow: every 30 s it reaps runs whose worker or flow process died
(see :mod:`sms_plugin.reaper`). Deployed as ``sms-housekeeping/every-30s`` by ``sms sync``/``sms up``."""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from sms_plugin.catalog import Catalog
from sms_plugin.reaper import housekeeping as reap_lost_runs


@flow(name="sms-housekeeping", description="Reaps SMS runs whose worker or flow process died.")
async def housekeeping() -> list[str]:
    """Marks lost runs Crashed, kills what is left of them on their hosts; returns what it did."""
    logger = get_run_logger()
    catalog = Catalog()
    try:
        notes = await reap_lost_runs(catalog)
    finally:
        catalog.dispose()
    for note in notes:
        logger.warning(note)
    logger.info(f"{len(notes)} run(s) reaped")
    return notes
