"""The flow's side of log shipping: a logging handler that spools the run's output records.

The run-script flow logs each batch of output lines as one record tagged with
``extra={OUTPUT: (source, stream)}`` (Prefect's run log gets the same record). While
:func:`shipping` is active, :class:`SpoolHandler` turns the tagged records of its run into one
document per line on the local spool, and a thread sends them on. The script never waits for
Elasticsearch: its lines only go to a local file on the way.

Example (what the flow does)::

    async with shipping(source, logger.logger):
        logger.info("line 1\\nline 2", extra={OUTPUT: (source, "stdout")})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from sms_plugin.settings import current, log_spool_dir
from sms_plugin.telemetry.logs.delivery import Deliverer, LiveDelivery, flush
from sms_plugin.telemetry.logs.documents import OutputSource, bulk_records
from sms_plugin.telemetry.logs.elastic import connect
from sms_plugin.telemetry.logs.spool import SpoolWriter, spool_path

OUTPUT = "sms_output"
"""LogRecord attribute that marks script output: ``(OutputSource, stream)``."""


class SpoolHandler(logging.Handler):
    """Spools the output records of one run attempt, one bulk record per line, numbered from 1."""

    def __init__(self, source: OutputSource, writer: SpoolWriter) -> None:
        super().__init__(level=logging.NOTSET)
        self.source = source
        self.writer = writer
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        tagged = getattr(record, OUTPUT, None)
        if tagged is None or tagged[0] is not self.source:
            return
        # a record is consecutive lines of one stream (after the host's prefix, in a fleet run)
        texts = record.getMessage().removeprefix(self.source.prefix).split("\n")
        try:
            self.writer.write(bulk_records(self.source, tagged[1], self.lines + 1, record.created, texts))
        except Exception:  # noqa: BLE001 - e.g. a full disk: report, never break the run
            self.handleError(record)
            return
        self.lines += len(texts)


@contextlib.asynccontextmanager
async def shipping(source: OutputSource, logger: logging.Logger) -> AsyncIterator[None]:
    """Ship ``source``'s output records logged on ``logger`` while inside (nothing when
    ``SMS_ELASTICSEARCH_URL`` is unset); on exit, one bounded attempt delivers the rest."""
    if not current().logs.elasticsearch_url:
        yield
        return
    folder = log_spool_dir()
    path = spool_path(folder, source.key)
    writer = SpoolWriter(path)
    handler = SpoolHandler(source, writer)
    deliverer = Deliverer(connect(), folder)
    live = LiveDelivery(deliverer, path)
    logger.addHandler(handler)
    live.start()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        writer.close()
        await asyncio.shield(asyncio.to_thread(_finish, live, deliverer, path))


def _finish(live: LiveDelivery, deliverer: Deliverer, path: Path) -> None:
    live.stop()
    flush(deliverer, path)
