"""What a worker does first on its pool: end the runs an earlier process of its name left Pending.

Housekeeping crashes the Pending runs of a silent worker (:mod:`sms_plugin.lost_runs`), but a
worker restarted under the same name (``sms worker --name …`` under systemd) is not silent: its
predecessor's Pending runs would stay Pending for good. Worker names must be unique among the
workers running at one time (Prefect keeps one record per name).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sms_plugin.lost_runs import crash_predecessors_pending


class EndsPredecessorsRuns:
    """Mixin for SMS's workers (before Prefect's worker class in the bases): on its first sync
    with the pool, the worker crashes the runs its name moved to Pending before it started."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._started_at = datetime.now(UTC)
        self._predecessors_checked = False
        super().__init__(*args, **kwargs)

    async def _initialize_after_sync(self) -> None:
        await super()._initialize_after_sync()  # type: ignore[misc]
        pool = self._work_pool  # type: ignore[attr-defined]
        if self._predecessors_checked or pool is None:
            return
        logger = self._logger  # type: ignore[attr-defined]
        try:
            notes = await crash_predecessors_pending(self.client, pool.name, self.name, self._started_at)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - tried again at the next sync
            logger.warning("could not look for runs an earlier worker of this name left Pending", exc_info=True)
            return
        self._predecessors_checked = True
        for note in notes:
            logger.warning(f"crashed {note}")
