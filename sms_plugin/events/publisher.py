"""``sms events``: publish the outbox to Kafka, and feed it Prefect's run events (docs/events.md).

Two loops share the catalog and nothing in memory:

- **follow Prefect** (async): reads Prefect's stored events since the recorded ``prefect`` position,
  then its live stream, and appends run events to the outbox (ids derived from Prefect's, so a
  replay adds nothing twice). The live stream drops events for a reader slower than they come, so
  the store is read again every ``SWEEP_SECONDS`` (``telemetry.store_sweeps``). While the outbox holds ``outbox_limit`` unpublished events it stops
  appending: the events stay in Prefect's store and are read from the recorded position later.
- **publish** (a thread; the Kafka client is synchronous): sends the outbox in position order with
  an idempotent producer and ``acks=all``, waits for every delivery report, and records the last
  position delivered without a gap (``kafka``). A failed send is retried from the outbox, so a
  restart, a Kafka outage or a crash re-sends only events whose id the consumer may have seen.

Settings (the tree's ``events`` group, sms_plugin.settings): ``SMS_KAFKA_BOOTSTRAP`` (brokers, required), ``SMS_EVENTS_OUTBOX_LIMIT``
(100000), ``SMS_EVENTS_SEND_TIMEOUT_SECONDS`` (30), ``SMS_EVENTS_METRICS_PORT`` (9479; 0: none),
``SMS_EVENTS_METRICS_ADDRESS`` (127.0.0.1), ``SMS_EVENTS_METRICS_TLS_CERT``/``_TLS_KEY`` (HTTPS, as the
exporter's: ``telemetry.metrics_endpoint``); TLS and the SASL/SCRAM identity of the Kafka link:
``kafka_security`` (docs/tls.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import ObjectNotFound
from prometheus_client import CollectorRegistry, Counter, Gauge

from sms_plugin import tls
from sms_plugin.catalog import Catalog
from sms_plugin.catalog import outbox
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.errors import SMSError
from sms_plugin.events.cloudevent import CONTENT_TYPE, record
from sms_plugin.events.kafka_security import KafkaSecurity
from sms_plugin.events.run_source import PREFIXES, RunLabels, outbox_row, state_run_id
from sms_plugin.settings import EventSettings, current
from sms_plugin.telemetry.metrics import TERMINAL
from sms_plugin.telemetry.metrics_endpoint import MetricsEndpoint
from sms_plugin.telemetry.sources import labels_of, stored_events
from sms_plugin.telemetry.store_sweeps import sweep_store

log = logging.getLogger("sms.events")

KAFKA_POSITION = "kafka"
PREFECT_POSITION = "prefect"
BATCH = 500
POLL_SECONDS = 0.2
RETRY_SECONDS = 2.0
GAP_SECONDS = 10.0
"""How long a hole in the outbox's positions is waited for (a transaction still committing on
MariaDB) before it is taken for a rolled-back one and skipped."""
CATCH_UP_MARGIN = timedelta(minutes=1)
"""How far before the recorded position, or the last sweep, the store is read (Prefect stores an
event some seconds after it happened)."""
SWEEP_SECONDS = 15.0
"""How often the store is read again while the live stream is followed."""
SCRIPTS_REMEMBERED = 10_000
"""Flow runs whose script and host the publisher remembers (the oldest is forgotten first)."""
KEEP_PUBLISHED = 10_000
"""Published events kept in the outbox (for inspection); older ones are deleted."""


@dataclass(frozen=True)
class PublisherSettings:
    """The publisher's settings: the settings tree's ``events`` group with its brokers (see ``of``)."""

    bootstrap: str
    outbox_limit: int
    send_timeout_seconds: float
    metrics: MetricsEndpoint | None
    """The publisher's own ``/metrics`` (None: not served)."""
    #: TLS and SASL (None: the tree's ``events`` group, for ``bootstrap``).
    security: KafkaSecurity | None = None

    def __post_init__(self) -> None:
        self.producer_config()  # inconsistent TLS or SASL settings stop `sms events` before it starts

    @classmethod
    def of(cls, events: EventSettings) -> PublisherSettings:
        if not events.kafka_bootstrap:
            raise SMSError("set SMS_KAFKA_BOOTSTRAP to the Kafka brokers, e.g. kafka-1:9092,kafka-2:9092")
        metrics = MetricsEndpoint(
            "the event publisher's metrics", "SMS_EVENTS_METRICS_", events.metrics_address, events.metrics_port,
            events.metrics_tls_cert, events.metrics_tls_key, events.metrics_allow_plain_http,
        ) if events.metrics_port else None
        return cls(events.kafka_bootstrap, events.outbox_limit, events.send_timeout_seconds, metrics)

    def producer_config(self) -> dict[str, Any]:
        """The producer's librdkafka settings (they hold the SASL password: never log them)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(self.send_timeout_seconds * 1000),
            **(self.security or KafkaSecurity(self.bootstrap)).client_config(),
        }


_ELAPSED = re.compile(r" \(after \d+ms[^)]*\)$")
"""The part of a librdkafka error that differs between repeats of one failure."""


class PublisherMetrics:
    """The publisher's own Prometheus metrics (docs/events.md#metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backlog = Gauge("sms_events_outbox_backlog", "Events in the outbox not yet published.",
                             registry=self.registry)
        self.full = Gauge("sms_events_outbox_full", "1 while the outbox is at its limit (run events wait in Prefect).",
                          registry=self.registry)
        self.published = Counter("sms_events_published", "Events delivered to Kafka.", ["topic"],
                                 registry=self.registry)
        self.failures = Counter("sms_events_send_failures", "Sends that Kafka did not acknowledge (retried).",
                                registry=self.registry)
        self.position = Gauge("sms_events_published_position", "The outbox position delivered last.",
                              registry=self.registry)


class OutboxSender:
    """Sends outbox rows in order and says how many, from the first, Kafka acknowledged."""

    def __init__(self, settings: PublisherSettings) -> None:
        self.settings = settings
        self._last_error = ""
        self.producer = self._producer()

    def _producer(self) -> Producer:
        return Producer({**self.settings.producer_config(), "error_cb": self._broker_error})

    def _broker_error(self, error: KafkaError) -> None:
        """Logs a client-level error once until another one happens; a refused certificate or
        login names the brokers (the events wait in the outbox meanwhile)."""
        text = error.str()
        reason = _ELAPSED.sub("", text)
        if reason == self._last_error:
            return
        self._last_error = reason
        link = f"Kafka at {self.settings.bootstrap}"
        if error.code() == KafkaError._SSL and "certificate verify failed" in text:
            log.error("%s", tls.certificate_refused(link, text))
        elif error.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION):
            log.error("%s refused the connection: %s", link, text)
        else:
            log.warning("%s: %s", link, text)

    def send(self, rows: list[OutboxEvent]) -> int:
        results: list[KafkaError | None | bool] = [False] * len(rows)

        def delivered(index: int) -> Any:
            def report(error: KafkaError | None, _message: Message) -> None:
                results[index] = error
            return report

        for index, row in enumerate(rows):
            key, value = record(row)
            self.producer.produce(row.topic, value=value, key=key, headers={"content-type": CONTENT_TYPE},
                                  on_delivery=delivered(index))
            self.producer.poll(0)
        self.producer.flush(self.settings.send_timeout_seconds + 5)
        count = 0
        for result in results:
            if result is not None:  # False: no report yet; a KafkaError: refused or timed out
                break
            count += 1
        errors = [r for r in results if isinstance(r, KafkaError)]
        if errors:
            log.warning("Kafka did not take %d of %d events: %s", len(rows) - count, len(rows), errors[0])
            if any(error.fatal() for error in errors):
                self.producer = self._producer()  # a fresh producer id and epoch
        return count

    def close(self) -> None:
        self.producer.flush(self.settings.send_timeout_seconds)


def unbroken(positions: list[int], after: int, step: int) -> int:
    """How many of ``positions`` (ascending) follow ``after`` without a hole. One writer's positions
    are ``step`` apart (``outbox.position_step``: 3 on a three-node Galera cluster), so a larger
    jump is a transaction not committed yet, or rolled back."""
    count, last = 0, after
    for position in positions:
        if position - last > step:
            break
        count, last = count + 1, position
    return count


class Publisher:
    """The publisher of one catalog: ``run()`` until ``stop()``."""

    def __init__(self, catalog: Catalog, settings: PublisherSettings | None = None) -> None:
        self.catalog = catalog
        self.settings = settings or PublisherSettings.of(current().events)
        self.metrics = PublisherMetrics()
        self._stopping = threading.Event()
        self._gap_since: float | None = None
        self._runs: dict[str, RunLabels] = {}
        self._storing = asyncio.Lock()
        """One append at a time: the live stream's and a sweep's may carry the same event."""

    # Outbox → Kafka

    def _next_rows(self, after: int) -> list[OutboxEvent]:
        """The next rows without a hole in their positions (a hole older than GAP_SECONDS is skipped)."""
        with self.catalog.session() as s:
            rows = outbox.pending(s, after, BATCH)
            step = outbox.position_step(s)
            self.metrics.backlog.set(outbox.backlog(s, after))
        if not rows:
            return []
        positions = [row.position for row in rows]
        count = unbroken(positions, after, step)
        if count == 0:
            now = time.monotonic()
            self._gap_since = self._gap_since or now
            if now - self._gap_since < GAP_SECONDS:
                return []
            log.warning("outbox positions %d-%d never committed: skipped", after + 1, positions[0] - 1)
            count = 1 + unbroken(positions[1:], positions[0], step)
        self._gap_since = None
        return rows[:count]

    def publish_forever(self) -> None:
        """Send the outbox to Kafka until ``stop()``; resumes from the recorded position."""
        sender = OutboxSender(self.settings)
        with self.catalog.session() as s:
            position = int(outbox.get_position(s, KAFKA_POSITION) or 0)
        self.metrics.position.set(position)
        try:
            while not self._stopping.is_set():
                rows = self._next_rows(position)
                if not rows:
                    self._stopping.wait(POLL_SECONDS)
                    continue
                sent = sender.send(rows)
                if sent:
                    position = rows[sent - 1].position
                    with self.catalog.session() as s:
                        outbox.set_position(s, KAFKA_POSITION, str(position))
                        outbox.purge(s, position, KEEP_PUBLISHED)
                    self.metrics.position.set(position)
                    for row in rows[:sent]:
                        self.metrics.published.labels(row.topic).inc()
                if sent < len(rows):
                    self.metrics.failures.inc()
                    self._stopping.wait(RETRY_SECONDS)
        finally:
            sender.close()

    # Prefect → outbox

    async def _labels_of(self, client: PrefectClient, event: Event) -> RunLabels:
        """Script, host and start of a state event's flow run (remembered per run; read again for
        an end state, whose duration needs the start)."""
        run_id = state_run_id(event)
        if run_id is None:
            return RunLabels()
        known = self._runs.get(run_id)
        ending = event.resource.get("prefect.state-type") in TERMINAL
        if known is None or (ending and known.start_time is None):
            if known is None and len(self._runs) >= SCRIPTS_REMEMBERED:
                self._runs.pop(next(iter(self._runs)))
            try:
                flow_run = await client.read_flow_run(uuid.UUID(run_id))
                script, host = labels_of(flow_run)
                known = RunLabels(script, host, flow_run.start_time)
            except ObjectNotFound:
                known = RunLabels()  # deleted meanwhile
            self._runs[run_id] = known
        return known

    async def _append(self, client: PrefectClient, event: Event) -> None:
        row = outbox_row(event, await self._labels_of(client, event))
        await self._stored([row] if row else [], event.occurred)

    async def _stored(self, rows: list[dict[str, Any]], occurred: datetime) -> None:
        async with self._storing:
            await asyncio.to_thread(self._store, rows, occurred)

    def _store(self, rows: list[dict[str, Any]], occurred: datetime) -> None:
        """Append run events and advance the ``prefect`` position in one transaction; raises
        OutboxFull (and appends nothing) while the outbox is at its limit."""
        with self.catalog.session() as s:
            published = int(outbox.get_position(s, KAFKA_POSITION) or 0)
            if rows and outbox.backlog(s, published) >= self.settings.outbox_limit:
                raise OutboxFull()
            outbox.append(s, rows)
            recorded = outbox.get_position(s, PREFECT_POSITION)
            if recorded is None or datetime.fromisoformat(recorded) < occurred:
                outbox.set_position(s, PREFECT_POSITION, occurred.astimezone(UTC).isoformat())

    async def _catch_up(self) -> None:
        """Append the stored events since the recorded ``prefect`` position (less a margin)."""
        recorded = await self.catalog.aio.run(outbox.get_position, PREFECT_POSITION)
        if recorded is None:
            return  # first start: the live stream's replay covers the last minutes
        await self._append_stored(datetime.fromisoformat(recorded) - CATCH_UP_MARGIN)

    async def _append_stored(self, since: datetime) -> None:
        """Append Prefect's stored run events since ``since``, up to BATCH per transaction (those
        already in the outbox are skipped by id)."""
        async with get_client() as client:
            for prefix in PREFIXES:
                rows: list[dict[str, Any]] = []
                latest: datetime | None = None
                async for event in stored_events(client, prefix, since):
                    if row := outbox_row(event, await self._labels_of(client, event)):
                        rows.append(row)
                    latest = event.occurred
                    if len(rows) >= BATCH:
                        await self._stored(rows, latest)
                        rows = []
                if latest is not None:
                    await self._stored(rows, latest)

    async def follow_prefect(self) -> None:
        """Append Prefect's run events to the outbox until ``stop()``, reconnecting when the
        connection is lost and waiting while the outbox is full."""
        event_filter = EventFilter(event=EventNameFilter(prefix=list(PREFIXES)))
        while not self._stopping.is_set():
            try:
                await self._catch_up()
                async with get_client() as client, get_events_subscriber(filter=event_filter) as subscriber:
                    sweeping = asyncio.create_task(sweep_store(
                        self._append_stored, datetime.now(UTC) - CATCH_UP_MARGIN,
                        every=SWEEP_SECONDS, margin=CATCH_UP_MARGIN))
                    try:
                        async for event in subscriber:
                            await self._append(client, event)
                    finally:
                        sweeping.cancel()
            except OutboxFull:
                log.warning("the outbox holds %d events: run events wait in Prefect", self.settings.outbox_limit)
                self.metrics.full.set(1)
                await self._wait_for_room()
                self.metrics.full.set(0)
            except Exception as error:  # noqa: BLE001 - a lost Prefect connection: resume from the position
                log.warning("Prefect's event stream failed (%s: %s); resuming", type(error).__name__, error)
                await asyncio.sleep(RETRY_SECONDS)

    def _unpublished(self) -> int:
        with self.catalog.session() as s:
            return outbox.backlog(s, int(outbox.get_position(s, KAFKA_POSITION) or 0))

    async def _wait_for_room(self) -> None:
        while not self._stopping.is_set() and await asyncio.to_thread(self._unpublished) >= self.settings.outbox_limit:
            await asyncio.sleep(RETRY_SECONDS)

    async def run(self) -> None:
        """Both loops until ``stop()``; an error in either ends both and is raised here."""
        if self.settings.metrics is not None:
            self.settings.metrics.serve(self.metrics.registry)
        publishing = asyncio.create_task(asyncio.to_thread(self.publish_forever))
        following = asyncio.create_task(self.follow_prefect())
        try:
            done, _ = await asyncio.wait({publishing, following}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop()
            following.cancel()
            await asyncio.gather(publishing, following, return_exceptions=True)
        for task in done:
            task.result()

    def stop(self) -> None:
        self._stopping.set()


class OutboxFull(Exception):
    """The outbox holds ``SMS_EVENTS_OUTBOX_LIMIT`` unpublished events."""
