"""The publisher's outbox → Kafka path on the test bed's broker(s), with ``acks=all``:

1. throughput: N events already in the outbox, published from position 0 (events/s);
2. latency: a catalog change (a pushed version) until a consumer reads its event (p50/p95);
3. memory: the publisher's RSS, in a process of its own, while this process writes 1,000 events/s
   into the outbox for ``--seconds`` (sampled every second), and the backlog it leaves.

    .venv/bin/python -m bench.events [--brokers 3] [--events 20000] [--seconds 30]

The publisher's outbox loop runs on an SQLite catalog in a temp folder (phases 1-2: a thread of
this process; phase 3: a child process); Prefect is not involved (run events enter the outbox the
same way). Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer

from infra.testbed.kafka import KafkaCluster
from sms_plugin.catalog import Catalog, ScriptSpec, add_script, add_version
from sms_plugin.catalog import outbox
from sms_plugin.events.publisher import KAFKA_POSITION, Publisher, PublisherSettings
from sms_plugin.settings import EventSettings


def run_event(number: int) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "topic": outbox.RUNS_TOPIC, "key": f"script-{number % 50}",
            "type": "sms.run.running", "source": "/sms/runs", "subject": str(uuid.uuid4()),
            "time": datetime.now(UTC), "data": {"script": f"script-{number % 50}", "state": "Running"}}


def published(catalog: Catalog) -> int:
    with catalog.session() as s:
        return int(outbox.get_position(s, KAFKA_POSITION) or 0)


def waiting(catalog: Catalog) -> int:
    with catalog.session() as s:
        return outbox.backlog(s, int(outbox.get_position(s, KAFKA_POSITION) or 0))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def publish_only(database_url: str, bootstrap: str) -> None:
    """The publisher's outbox loop alone, in a child process (until it is terminated)."""
    catalog = Catalog(database_url)
    Publisher(catalog, PublisherSettings.of(EventSettings(kafka_bootstrap=bootstrap, metrics_port=0))).publish_forever()


def sustained_load(catalog: Catalog, database_url: str, bootstrap: str, seconds: int) -> None:
    """Phase 3: 1,000 events/s into the outbox, the publisher in its own process; its RSS each second."""
    child = multiprocessing.get_context("spawn").Process(target=publish_only, args=(database_url, bootstrap))
    child.start()
    with catalog.session() as s:  # warm-up: the child publishes once it has imported and connected
        outbox.append(s, [run_event(0)])
    while waiting(catalog):
        time.sleep(0.2)
    samples = [rss_mb(child.pid)]
    start, written = time.perf_counter(), 0
    for second in range(seconds):
        with catalog.session() as s:
            outbox.append(s, [run_event(written + n) for n in range(1000)])
        written += 1000
        time.sleep(max(0.0, start + second + 1 - time.perf_counter()))
        samples.append(rss_mb(child.pid))
    left = waiting(catalog)
    drained = time.perf_counter()
    while waiting(catalog):
        time.sleep(0.2)
        samples.append(rss_mb(child.pid))
    drain_seconds = time.perf_counter() - drained
    child.terminate()
    child.join(30)
    print(f"1,000 events/s for {seconds} s ({written} events): publisher RSS {samples[0]:.0f} MB at rest, "
          f"{max(samples):.0f} MB peak, {samples[-1]:.0f} MB at the end; backlog {left} events when the writes "
          f"stopped, drained in {drain_seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", type=int, default=3, choices=(1, 3))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--memory-only", action="store_true", help="phase 3 only")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-events-"))
    catalog = Catalog(f"sqlite:///{folder / 'catalog.db'}")
    catalog.upgrade()
    with KafkaCluster(args.brokers) as cluster:
        if args.memory_only:
            sustained_load(catalog, f"sqlite:///{folder / 'catalog.db'}", cluster.bootstrap, args.seconds)
            return
        publisher = Publisher(catalog, PublisherSettings.of(EventSettings(kafka_bootstrap=cluster.bootstrap, metrics_port=0)))
        thread = threading.Thread(target=publisher.publish_forever, daemon=True)
        thread.start()
        with catalog.session() as s:  # warm-up: the producer's id from a freshly started cluster
            outbox.append(s, [run_event(0)])
        while waiting(catalog):
            time.sleep(0.05)
        with catalog.session() as s:
            outbox.append(s, [run_event(n) for n in range(args.events)])
        began = time.perf_counter()
        while waiting(catalog):
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        print(f"{args.brokers} broker(s): {args.events} events outbox→Kafka in {seconds:.2f} s: "
              f"{args.events / seconds:.0f} events/s (acks=all, idempotent)")

        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "bench",
                             "auto.offset.reset": "latest", "fetch.wait.max.ms": 10})
        with catalog.session() as s:  # creates the topic
            add_script(s, ScriptSpec(name="bench", interpreter="bash", host="h"), content="0", author="bench")
        while waiting(catalog):
            time.sleep(0.05)
        consumer.subscribe([outbox.CATALOG_TOPIC])
        while not consumer.assignment():  # "latest" counts from the assignment: wait for it
            consumer.poll(0.2)
        latencies = []
        for number in range(1, args.changes + 1):
            changed = time.perf_counter()
            with catalog.session() as s:
                add_version(s, "bench", f"echo {number}", author="bench")
            deadline = time.perf_counter() + 60
            while (message := consumer.poll(5.0)) is None or message.error():
                if time.perf_counter() > deadline:
                    raise SystemExit(f"version {number}'s event was not readable within 60 s")
            latencies.append(time.perf_counter() - changed)
        consumer.close()
        cuts = statistics.quantiles(latencies, n=20)
        print(f"change → readable: p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {cuts[18] * 1000:.0f} ms "
              f"({args.changes} pushed versions)")

        publisher.stop()
        thread.join()
        sustained_load(catalog, f"sqlite:///{folder / 'catalog.db'}", cluster.bootstrap, args.seconds)
    catalog.dispose()


if __name__ == "__main__":
    main()
