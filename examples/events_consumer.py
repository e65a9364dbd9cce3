"""An example consumer of SMS's events on Kafka (docs/events.md#consuming): it prints a line for every
run that failed on a host, once per event even when Kafka delivers it again.

    python examples/events_consumer.py --bootstrap kafka-1:9092,kafka-2:9092 --group on-call-pager

Copy it and change :func:`reaction` to page someone, open a ticket or start another job. It commits
its offset after handling each batch (at-least-once on its side too) and drops events whose id it
has seen: keep the ids in your own store if your reaction must survive a restart exactly once.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

TOPICS = ("sms.runs", "sms.catalog")
FAILED_ON_HOST = ("sms.run.host.failed", "sms.run.host.timed-out", "sms.run.host.unreachable")


def reaction(event: dict[str, Any]) -> str | None:
    """What to do about one event: here, a line for a host where a run failed; None to ignore it."""
    data = event["data"]
    if event["type"] in FAILED_ON_HOST:
        exit_code = "" if data.get("exit_code") is None else f" (exit code {data['exit_code']})"
        return f"{data['script']} {data['state'].replace('_', ' ')} on {data['host']}{exit_code}, run {data['run_id']}"
    if event["type"] == "sms.run.crashed":
        return f"{data['script']} crashed, run {data['run_id']}"
    return None


class SeenIds:
    """The ids of the last ``size`` events handled (Kafka may deliver an event again)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


def consume(consumer: Consumer, act: Callable[[str], None], *, seen: SeenIds | None = None,
            keep_going: Callable[[], bool] = lambda: True) -> None:
    """Hands every new event's reaction to ``act`` while ``keep_going()``; commits after each batch."""
    seen = seen or SeenIds()
    while keep_going():
        messages = consumer.consume(100, timeout=1.0)
        for message in messages:
            if message.error() is not None:
                continue  # librdkafka reports outages here and reconnects by itself
            event = json.loads(message.value())
            if seen.first_time(event["id"]) and (line := reaction(event)) is not None:
                act(line)
        if messages:
            consumer.commit(asynchronous=False)


def consumer_for(bootstrap: str, group: str) -> Consumer:
    """A consumer of SMS's topics in consumer group ``group`` (new groups start at the oldest event)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(list(TOPICS))
    return consumer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="the Kafka brokers, host:port,host:port")
    parser.add_argument("--group", default="sms-example-consumer", help="the consumer group (keeps the offset)")
    args = parser.parse_args()
    consumer = consumer_for(args.bootstrap, args.group)
    try:
        consume(consumer, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
