"""A fleet run's host execution rows, written many changes per transaction.

Each host records three changes (running, started, ended): one transaction each, a 1,000-host run
costs 3,000 transactions. Here a change that arrives while a transaction is under way waits and
goes, with every other change that arrived meanwhile, in the next one. The writer still waits until
its change is committed (a host is recorded ``running`` before its script starts), and a writer
cancelled while it waits has its change written all the same (a stop is recorded)::

    writes = BatchedWrites(catalog, apply=lambda session, host, fields: update_host_execution(session, run_id, host, **fields))
    await writes.write("web-01", state="running")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from sms_plugin.catalog import Catalog
from sms_plugin.catalog.retry import idempotent

Apply = Callable[[Session, str, dict[str, Any]], None]
"""Writes one host's change in a transaction, by setting fields only (it may run twice: ``catalog.retry.idempotent``)."""

log = logging.getLogger(__name__)


class BatchedWrites:
    """Changes of host rows, committed in batches by one task at a time (see the module)."""

    def __init__(self, catalog: Catalog, apply: Apply) -> None:
        self.catalog = catalog
        self.apply = apply
        self.transactions = 0
        """How many transactions were written (for tests and benchmarks)."""
        self._waiting: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, host: str, **fields: Any) -> None:
        """Records ``fields`` on ``host``'s row; returns once committed (raises what the write raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((host, fields, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="fleet host rows")
        await asyncio.shield(future)

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            changes = [(host, fields) for host, fields, _ in batch]
            try:
                await self.catalog.aio.run(self._batch, changes)
            except Exception:  # noqa: BLE001 - one bad change must not fail the others: one by one
                log.warning("a batch of %d host rows failed; writing them one by one", len(changes), exc_info=True)
                for host, fields, future in batch:
                    await self._one(host, fields, future)
                continue
            for *_, future in batch:
                future.set_result(None)

    @idempotent  # its ``apply`` sets a row's fields: a second run after a landed commit changes nothing
    def _batch(self, session: Session, changes: list[tuple[str, dict[str, Any]]]) -> None:
        self.transactions += 1
        for host, fields in changes:
            self.apply(session, host, fields)

    async def _one(self, host: str, fields: dict[str, Any], future: asyncio.Future[None]) -> None:
        try:
            await self.catalog.aio.run(self._batch, [(host, fields)])
        except Exception as error:  # noqa: BLE001 - handed to its writer
            future.set_exception(error)
        else:
            future.set_result(None)
