"""Delivery: spool files go to Elasticsearch in order, chunk by chunk, and are removed once
their writer has finished and everything is acknowledged.

Three deliverers share the work (the spool's lock keeps them from sending the same file at once):

- the flow process, while its script runs (:class:`LiveDelivery`, every 0.1 s) and once more,
  bounded by FLUSH_SECONDS, when the script has ended;
- the ``sms log-shipper`` service (:func:`serve`), which delivers whatever is left — lines of
  runs that ended while Elasticsearch was down or slow, of flow processes that crashed — and
  applies the retention.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from elasticsearch import Elasticsearch

from sms_plugin.settings import current, log_spool_dir
from sms_plugin.telemetry.logs.elastic import ShippingError, apply_retention, connect, ensure_template, send
from sms_plugin.telemetry.logs.spool import SpoolFile, spool_files

LIVE_INTERVAL = 0.1
"""How often the flow process sends new lines while its script runs."""
FLUSH_SECONDS = 10.0
"""How long the flow process keeps trying to deliver when its script has ended."""
SHIPPER_INTERVAL = 1.0
"""How often ``sms log-shipper`` looks at the spool."""
RETENTION_INTERVAL = 3600.0

log = logging.getLogger(__name__)


class Deliverer:
    """Sends the whole records of spool files to Elasticsearch, oldest file first, in order."""

    def __init__(self, client: Elasticsearch, folder: Path) -> None:
        self.client = client
        self.folder = folder
        self._template_ready = False

    def deliver(self, paths: list[Path] | None = None, *, deadline: float | None = None) -> int:
        """Send what is complete in the spool (or in ``paths`` only) until done or ``deadline``
        (a ``time.monotonic()`` value); returns the number of lines sent. Raises
        :class:`ShippingError` when Elasticsearch does not take them now."""
        if not self._template_ready:
            ensure_template(self.client)
            self._template_ready = True
        files = [SpoolFile(path) for path in paths] if paths is not None else spool_files(self.folder)
        sent = 0
        for spool in files:
            with spool.locked() as mine:
                if mine:
                    sent += self._deliver_file(spool, deadline)
        return sent

    def _deliver_file(self, spool: SpoolFile, deadline: float | None) -> int:
        sent = 0
        while deadline is None or time.monotonic() < deadline:
            chunk = spool.next_chunk()
            if chunk is None:
                if spool.finished() and spool.next_chunk() is None:
                    spool.remove()
                return sent
            for error in send(self.client, chunk.data):
                log.error("Elasticsearch refused a line of %s for good: %s", spool.path.name, error[:300])
            spool.commit(chunk.end)
            sent += chunk.data.count(b"\n") // 2
        return sent


class LiveDelivery:
    """A thread that sends one spool file every LIVE_INTERVAL seconds while a script runs."""

    def __init__(self, deliverer: Deliverer, path: Path) -> None:
        self.deliverer = deliverer
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sms-log-delivery-{path.stem}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        interval = LIVE_INTERVAL
        while not self._stop.wait(interval):
            try:
                self.deliverer.deliver([self.path], deadline=time.monotonic() + 5)
                interval = LIVE_INTERVAL
            except ShippingError:
                interval = min(interval * 2, 5.0)  # Elasticsearch away: the spool keeps the lines


def flush(deliverer: Deliverer, path: Path, seconds: float = FLUSH_SECONDS) -> bool:
    """One bounded attempt to deliver ``path`` completely; False leaves it to ``sms log-shipper``."""
    try:
        deliverer.deliver([path], deadline=time.monotonic() + seconds)
    except ShippingError as error:
        log.warning("output lines wait in %s for `sms log-shipper`: %s", path, error)
        return False
    if path.exists():
        log.warning("output lines wait in %s for `sms log-shipper` (not delivered within %g s)", path, seconds)
        return False
    return True


def serve(stop: threading.Event, *, interval: float = SHIPPER_INTERVAL) -> None:
    """The ``sms log-shipper`` service: deliver the spool and apply the retention until ``stop``."""
    deliverer = Deliverer(connect(), log_spool_dir())
    retention_due = 0.0
    trouble = ""
    while not stop.is_set():
        try:
            if time.monotonic() >= retention_due:
                apply_retention(deliverer.client, current().logs.retention_days)
                retention_due = time.monotonic() + RETENTION_INTERVAL
            sent = deliverer.deliver()
            if sent:
                log.info("delivered %d line(s)", sent)
            if trouble:
                log.info("Elasticsearch takes lines again")
                trouble = ""
        except ShippingError as error:
            if str(error) != trouble:
                log.warning("%s; lines stay in the spool", error)
                trouble = str(error)
        stop.wait(interval)
