"""Run facts from Kafka: the CloudEvents ``sms events`` publishes on topic ``sms.runs``
(``SMS_EXPORTER_SOURCE=kafka``, docs/metrics.md).

A run event becomes the same fact the Prefect source makes of Prefect's event (:func:`fact_of`):
a state (``sms.run.<state>``, with the run's script, host, state type, the state's timestamp as
the event's time and, for an end state, the seconds it ran), a finished script
(``sms.run.finished``) or a transport error (``sms.transport.error``). Each fact carries the
CloudEvent's id, so a re-sent event is counted once.

:class:`RunEventConsumer` reads the topic from the first record at or after ``since`` (the
exporter's history window; Kafka finds the offset by time, :func:`start_offsets`) with a group of
its own that commits nothing: each start replays the window, as a rebuild from Prefect's API does. librdkafka
reconnects by itself after a broker or network outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sms_plugin import run_events
from sms_plugin.catalog.outbox import RUNS_TOPIC
from sms_plugin.events.kafka_security import KafkaSecurity
from sms_plugin.telemetry.metrics import RunFinished, RunState, TransportFailed
from sms_plugin.telemetry.sources import UNKNOWN

log = logging.getLogger("sms.exporter")

Fact = RunState | RunFinished | TransportFailed
OUTAGE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
_LOOKUP_TRIES, _LOOKUP_PAUSE, _LOOKUP_TIMEOUT = 40, 0.5, 10.0  # a new leader answers within ~20 s


def fact_of(event: dict[str, Any]) -> Fact | None:
    """The fact a run CloudEvent announces, or None (host executions' steps, reapings: not counted)."""
    kind, data = event["type"], event.get("data") or {}
    occurred = datetime.fromisoformat(event["time"])
    script, host = str(data.get("script") or UNKNOWN), str(data.get("host") or UNKNOWN)
    if kind == run_events.RUN_FINISHED:
        lines = {str(stream): int(count) for stream, count in dict(data.get("lines") or {}).items()}
        return RunFinished(event_id=event["id"], script=script, host=host, exit_code=int(data["exit_code"]),
                           occurred=occurred, lines=lines, timed_out=bool(data.get("timed_out")))
    if kind == run_events.TRANSPORT_ERROR:
        return TransportFailed(event_id=event["id"], host=host, kind=str(data.get("kind", UNKNOWN)), occurred=occurred,
                               script=script, unreachable=data.get("unreachable"))
    if kind.startswith("sms.run.") and data.get("state_type"):
        return RunState(state_id=event["id"], run_id=str(data["run_id"]), script=script, host=host,
                        state_type=str(data["state_type"]), timestamp=occurred,
                        duration_seconds=data.get("duration_seconds"))
    return None


def start_offsets(consumer: Consumer, partitions: list[TopicPartition], since_ms: int,
                  tries: int = _LOOKUP_TRIES) -> list[TopicPartition]:
    """Where each partition's replay starts: its first record at or after ``since_ms``, or, if it
    has none, its end as it was before the lookup (a record written meanwhile is read). A partition
    the broker cannot answer for yet (a leader just elected says OFFSET_NOT_AVAILABLE for a while)
    is asked again; still unanswered, it raises ``KafkaException`` and the exporter starts over."""
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=_LOOKUP_TIMEOUT, cached=False)[1]
            for p in partitions}
    starts: dict[int, int] = {}
    asking = partitions
    for attempt in range(tries):
        if attempt:
            time.sleep(_LOOKUP_PAUSE)
        found = consumer.offsets_for_times([TopicPartition(p.topic, p.partition, since_ms) for p in asking],
                                           timeout=_LOOKUP_TIMEOUT)
        starts.update({p.partition: p.offset if p.offset >= 0 else ends[p.partition]
                       for p in found if p.error is None})
        unanswered = [p for p in found if p.error is not None]
        if not unanswered:
            return [TopicPartition(p.topic, p.partition, starts[p.partition]) for p in partitions]
        asking = unanswered
    raise KafkaException(unanswered[0].error)


class RunEventConsumer:
    """Reads ``sms.runs`` from ``since`` on: ``await next_events()`` returns the next CloudEvents.
    The Kafka client is synchronous and not thread-safe: every call runs on one thread of its own."""

    def __init__(self, bootstrap: str, since: datetime) -> None:
        self.since_ms = int(since.timestamp() * 1000)
        self.connected = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sms-kafka-consumer")
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"sms-exporter-{uuid.uuid4()}",  # its own: commits nothing, replays the window
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **KafkaSecurity(bootstrap).client_config(),  # TLS and SASL as the publisher's (docs/tls.md#kafka)
        })
        self.consumer.subscribe([RUNS_TOPIC], on_assign=self._from_since)

    def _from_since(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(start_offsets(consumer, partitions, self.since_ms))

    def poll(self, timeout: float = 1.0, batch: int = 500) -> list[dict[str, Any]]:
        """The next CloudEvents (maybe none); Kafka's own errors are logged, never raised."""
        events = []
        for message in self.consumer.consume(batch, timeout):
            error = message.error()
            if error is not None:
                if error.code() in OUTAGE:
                    self.connected = False
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka: %s", error)
                continue
            self.connected = True
            try:
                events.append(json.loads(message.value()))
            except ValueError as problem:  # not JSON: not one of ours; skip it
                log.warning("skipped a record of %s at offset %s: %s", message.topic(), message.offset(), problem)
        return events

    async def next_events(self) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.poll)

    async def aclose(self) -> None:
        """Closes the consumer once a poll in progress has returned."""
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._thread, self.consumer.close))
        self._thread.shutdown()
