"""``sms events`` against a real Kafka cluster (three KRaft brokers, the test bed's) and a real
Prefect server; the metrics exporter fed from Kafka against the one fed from Prefect; the example
consumer (examples/events_consumer.py).

Events are read back by a real consumer (confluent-kafka) from topics ``sms.catalog`` and
``sms.runs``; each test uses its own script names (the record keys), so tests share the cluster and
one publisher process. The whole-cluster outage lasts 60 s, the issue's figure
(``SMS_KAFKA_OUTAGE_SECONDS`` shortens it for a quick local run; docs/events.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from prefect import get_client
from prefect.states import Cancelling

from examples import events_consumer
from flows.run_script import run_script
from infra.testbed.kafka import KafkaCluster
from infra.testbed.ports import free_port
from infra.testbed.sms_services import EventsPublisher
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec, add_script, add_version
from sms_plugin.catalog import outbox
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.events.publisher import KAFKA_POSITION
from sms_plugin.telemetry.exporter import SOURCES, Exporter, ExporterSettings
from tests.integration.conftest import block_of

pytestmark = pytest.mark.integration

TOPICS = ("sms.catalog", "sms.runs")
OUTAGE_SECONDS = float(os.environ.get("SMS_KAFKA_OUTAGE_SECONDS") or 60)


@pytest.fixture(scope="module")
def publisher(catalog: Catalog, prefect_server: Any, kafka: KafkaCluster) -> Iterator[EventsPublisher]:
    peer = EventsPublisher(prefect_server.api_url, kafka.bootstrap)
    peer.start()
    yield peer
    peer.stop()


def read_events(bootstrap: str, key: str, done: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 60) -> dict[str, list[dict[str, Any]]]:
    """The CloudEvents keyed ``key`` per topic, read from the start by a fresh consumer group until
    ``done(all of them)`` holds or ``timeout`` passes."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(TOPICS))
    found: dict[str, list[dict[str, Any]]] = {topic: [] for topic in TOPICS}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done([e for events in found.values() for e in events]):
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.key() == key.encode():
                event = json.loads(message.value())
                assert dict(message.headers() or [])["content-type"].startswith(b"application/cloudevents+json")
                found[message.topic()].append(event)
    finally:
        consumer.close()
    return found


def first_copies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` without duplicates, in order; a re-sent event must be the same event (same id, same content)."""
    kept: dict[str, dict[str, Any]] = {}
    for event in events:
        assert kept.setdefault(event["id"], event) == event
    return list(kept.values())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def states(events: list[dict[str, Any]], run_id: str) -> list[str]:
    """The Prefect states of one run, in order."""
    return [e["data"]["state"] for e in events if e["data"].get("run_id") == run_id and "state_type" in e["data"]]


def host_steps(events: list[dict[str, Any]], run_id: str, host: str) -> list[str]:
    """The steps of one host execution (``sms.run.host.*``, written with its catalog row), in order."""
    return [e["type"] for e in events if e["data"].get("run_id") == run_id and e["data"].get("host") == host
            and e["type"].startswith("sms.run.host.")]


@pytest.mark.timeout(900)  # the session's peers (Prefect, worker, sshd, Kafka) start in this test's setup
async def test_a_scripts_whole_life_arrives_in_order(catalog, ssh_server, prefect_worker, kafka, publisher):
    host, name = unique("events-ssh"), unique("events-life")
    fleet = [f"{host}-fleet-{n}" for n in range(3)]
    await hosts.add(host, block_of(ssh_server))
    await asyncio.gather(*(hosts.add(member, block_of(ssh_server)) for member in fleet))
    await hosts.set_labels(host, ["role=events"])
    spec = ScriptSpec(name=name, interpreter="bash", host=host)
    await scripts.add(catalog, spec, "echo ok\necho two\n", author="tests")
    completed = await run_script(script=name, host=host, return_state=True)
    await scripts.update(catalog, spec, "echo bad >&2\nexit 3\n", author="tests")
    failed = await run_script(script=name, host=host, return_state=True)
    await scripts.update(catalog, spec, "echo fleet\n", author="tests")
    fleet_run = await run_script(script=name, hosts=fleet, return_state=True)
    await scripts.update(catalog, spec.model_copy(update={"timeout_seconds": 300}), "echo started\nsleep 120\n",
                         author="tests")
    cancelled = await runs.start(catalog, name, trigger="cli", user="tests")
    await runs_reach_running(cancelled)
    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(cancelled), Cancelling(), force=True)
    assert (await runs.wait(catalog, cancelled, timeout=180, poll=0.2)).state == "CANCELLED"  # a busy worker
    await scripts.remove(catalog, name, author="tests")
    async with get_client() as client:  # as the Prefect UI removes a host
        await client.delete_block_document((await client.read_block_document_by_name(fleet[2], "sms-ssh-host")).id)
    assert completed.is_completed() and failed.is_failed() and fleet_run.is_completed()
    first, second, third = (str(s.state_details.flow_run_id) for s in (completed, failed, fleet_run))

    def complete(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == "sms.script.removed" for e in events) and any(
            e["type"] == "sms.run.cancelled" for e in events)

    found = read_events(kafka.bootstrap, name, complete)
    catalog_events = found["sms.catalog"]
    assert [(e["type"], e["data"].get("version")) for e in catalog_events] == [
        ("sms.script.added", None), ("sms.script.version.pushed", 1), ("sms.script.version.pushed", 2),
        ("sms.script.version.pushed", 3), ("sms.script.changed", None), ("sms.script.version.pushed", 4),
        ("sms.script.removed", None),
    ]
    assert catalog_events[4]["data"]["changed"] == ["timeout_seconds"]
    run_events = found["sms.runs"]
    for event in catalog_events + run_events:
        assert event["specversion"] == "1.0" and event["id"] and event["time"].endswith("Z")
    assert {e["data"]["run_id"] for e in run_events} == {first, second, third, cancelled}
    assert states(run_events, first) == ["Pending", "Running", "Completed"]
    assert states(run_events, second) == ["Pending", "Running", "Failed"]
    assert states(run_events, third) == ["Pending", "Running", "Completed"]
    # The sms worker has no Submitting; a stop may set Cancelling twice (the caller, then the worker).
    in_order = [state for state, _ in itertools.groupby(states(run_events, cancelled))]
    assert in_order == ["Scheduled", "Pending", "Running", "Cancelling", "Cancelled"]
    ended = {e["data"]["run_id"]: e["data"] for e in run_events if e["type"] == "sms.run.completed"}
    assert ended[first]["host"] == host and ended[third]["host"] == "fleet" and ended[first]["duration_seconds"] > 0
    finished = {(e["data"]["run_id"], e["data"]["host"]): e["data"] for e in run_events if e["type"] == "sms.run.finished"}
    assert finished[first, host]["exit_code"] == 0 and finished[first, host]["lines"] == {"stdout": 2, "stderr": 0}
    assert finished[second, host]["exit_code"] == 3 and finished[second, host]["lines"] == {"stdout": 0, "stderr": 1}
    # Each host of the fleet run: its process started (with its id), it ran to the end, it succeeded.
    for member in fleet:
        assert host_steps(run_events, third, member) == ["sms.run.host.started", "sms.run.host.succeeded"], member
        started = next(e["data"] for e in run_events if e["type"] == "sms.run.host.started" and e["data"]["host"] == member)
        assert started["remote_pid"] > 0 and finished[third, member]["lines"]["stdout"] == 1
    assert host_steps(run_events, second, host) == ["sms.run.host.started", "sms.run.host.failed"]
    # One script's run events keep their order: every state of a run comes after the previous run's end.
    order = [e["data"]["run_id"] for e in run_events if "state_type" in e["data"]]
    assert order == sorted(order, key=[first, second, third, cancelled].index)
    assert len({e["id"] for e in catalog_events + run_events}) == len(catalog_events) + len(run_events)

    changes = read_events(kafka.bootstrap, f"host:{host}", lambda events: len(events) >= 2)["sms.catalog"]
    assert [(e["type"], e["data"]) for e in changes] == [
        ("sms.host.added", {"host": host, "kind": "ssh"}), ("sms.host.changed", {"host": host, "kind": "ssh"})]
    removed = read_events(kafka.bootstrap, f"host:{fleet[2]}", lambda events: len(events) >= 2)["sms.catalog"]
    assert [e["type"] for e in removed] == ["sms.host.added", "sms.host.removed"]


async def runs_reach_running(run_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            state = (await client.read_flow_run(uuid.UUID(run_id))).state
            if state is not None and state.is_running():
                return
            await asyncio.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached Running")


def push_versions(catalog: Catalog, name: str, numbers: range) -> None:
    for number in numbers:
        with catalog.session() as s:
            add_version(s, name, f"echo {number}\n", author="tests")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def outbox_ids(catalog: Catalog, name: str) -> list[str]:
    with catalog.session() as s:
        return [row.id for row in s.query(OutboxEvent).filter(OutboxEvent.key == name).order_by(OutboxEvent.position)]


def add(catalog: Catalog, name: str) -> None:
    """A script in the catalog only (its events need no deployment)."""
    with catalog.session() as s:
        add_script(s, ScriptSpec(name=name, interpreter="bash", host="web-1"), content="echo 0\n", author="tests")


def test_a_publisher_killed_mid_stream_loses_nothing(catalog, kafka, publisher):
    name = unique("events-kill")
    add(catalog, name)
    push_versions(catalog, name, range(1, 150))
    publisher.kill()  # while it sends
    push_versions(catalog, name, range(150, 300))  # written while no publisher runs
    publisher.restart()
    expected = outbox_ids(catalog, name)
    assert len(expected) == 301  # added + 300 versions

    found = read_events(kafka.bootstrap, name, lambda events: {e["id"] for e in events} >= set(expected))
    deduplicated = first_copies(found["sms.catalog"])
    assert [e["id"] for e in deduplicated] == expected  # all of them, in outbox order
    assert [e["data"]["version"] for e in deduplicated[1:]] == list(range(1, 301))


def unpublished(catalog: Catalog, name: str) -> int:
    """How many of ``name``'s events wait in the outbox (after the publisher's recorded position)."""
    with catalog.session() as s:
        published = int(outbox.get_position(s, KAFKA_POSITION) or 0)
        return s.query(OutboxEvent).filter(OutboxEvent.key == name, OutboxEvent.position > published).count()


@pytest.mark.timeout(900)  # the 60 s outage, the three brokers' restart and, if first, the session's peers' start
def test_events_wait_in_the_outbox_while_kafka_is_down(catalog, kafka, publisher):
    name = unique("events-outage")
    add(catalog, name)
    # The catalog's position, not the publisher's backlog gauge, which may not have seen them yet.
    wait_until(lambda: unpublished(catalog, name) == 0, 30, "the first events were never sent")
    kafka.halt()
    try:
        push_versions(catalog, name, range(1, 6))
        wait_until(lambda: (publisher.value("sms_events_outbox_backlog") or 0) >= 5, 30, "backlog not reported")
        time.sleep(OUTAGE_SECONDS)  # longer than the send timeout: the sends fail and wait in the outbox
        assert (publisher.value("sms_events_send_failures_total") or 0) >= 1
        assert (publisher.value("sms_events_outbox_backlog") or 0) >= 5
        assert unpublished(catalog, name) == 5  # held on disk, in the catalog
    finally:
        kafka.resume()
    expected = outbox_ids(catalog, name)
    found = read_events(kafka.bootstrap, name, lambda events: {e["id"] for e in events} >= set(expected), timeout=120)
    deduplicated = first_copies(found["sms.catalog"])
    assert [e["id"] for e in deduplicated] == expected
    assert [e["data"].get("version") for e in deduplicated] == [None, 1, 2, 3, 4, 5, 6]  # added with 1, then 5 pushes
    wait_until(lambda: publisher.value("sms_events_outbox_backlog") == 0, 30, "the backlog was not drained")


def run_events_of(script: str, runs_count: int) -> list[dict[str, Any]]:
    """Outbox rows of ``runs_count`` runs of ``script``: pending, running, completed each."""
    rows = []
    for _ in range(runs_count):
        run_id = str(uuid.uuid4())
        for state in ("Pending", "Running", "Completed"):
            rows.append({"id": str(uuid.uuid4()), "topic": outbox.RUNS_TOPIC, "key": script, "source": "/sms/runs",
                         "type": f"sms.run.{state.lower()}", "subject": run_id, "time": datetime.now(UTC),
                         "data": {"script": script, "run_id": run_id, "host": "web-1", "state": state,
                                  "state_type": state.upper()}})
    return rows


@pytest.mark.timeout(300)
def test_one_broker_of_three_stopped_during_a_burst_loses_nothing(catalog, kafka, publisher):
    scripts_of_burst = [unique("events-burst") for _ in range(4)]
    bursts = [run_events_of(script, 250) for script in scripts_of_burst]  # 1,000 runs, 3,000 events
    with catalog.session() as s:
        outbox.append(s, bursts[0])
    wait_until(lambda: unpublished(catalog, scripts_of_burst[0]) < 750, 60, "the burst never started")
    stopped = kafka.nodes[1]
    stopped.halt()  # mid-burst: its partitions' leaders move to the two others (min.insync.replicas=2)
    try:
        for burst in bursts[1:]:
            with catalog.session() as s:
                outbox.append(s, burst)
        wait_until(lambda: sum(unpublished(catalog, script) for script in scripts_of_burst) == 0, 180,
                   "the burst was not published with one broker down")
    finally:
        stopped.resume()
    for script, burst in zip(scripts_of_burst, bursts, strict=True):
        expected = [row["id"] for row in burst]
        found = read_events(kafka.bootstrap, script, lambda events, ids=set(expected): {e["id"] for e in events} >= ids)
        assert [e["id"] for e in first_copies(found["sms.runs"])] == expected  # all, in order per script


async def test_the_exporter_counts_the_same_from_kafka_as_from_prefect(catalog, ssh_server, prefect_worker, kafka,
                                                                        publisher):
    """The same runs, counted live by two exporters (one per source), then by two fresh ones (a
    rebuild from Prefect's API against a replay of Kafka's window): the same run metrics.

    The fresh pair's window starts a minute before this test: in the whole suite the topic holds
    every earlier test's runs (the publisher sends the shared catalog's outbox), and twice a
    replay of them all had not reached this test's events when the 90 s comparison ended."""
    began = time.time()
    name, down = unique("events-count"), unique("events-down")
    good = [f"{name}-ok-{n}" for n in range(2)]
    await asyncio.gather(*(hosts.add(member, block_of(ssh_server)) for member in good))
    await hosts.add(down, block_of(ssh_server, port=free_port(), connect_timeout=3))
    live = await following_exporters(kafka)
    try:
        with catalog.session() as s:
            add_script(s, ScriptSpec(name=name, interpreter="bash", host=good[0]),
                       content="echo one\necho two >&2\nexit ${1:-0}\n", author="tests")
        await run_script(script=name, host=good[0], return_state=True)
        await run_script(script=name, host=good[0], args=["4"], return_state=True)
        await run_script(script=name, hosts=[*good, down], return_state=True)

        def counted(samples: dict[tuple, float]) -> bool:
            return sum(v for (metric, labels), v in samples.items() if metric == "sms_host_executions_total") == 5
        await same_counts(live, {name}, {down, *good}, counted)
    finally:
        await stop_exporters(live)
    fresh = await following_exporters(kafka, history_hours=(time.time() - began + 60) / 3600)
    try:
        await same_counts(fresh, {name}, {down, *good}, counted)
    finally:
        await stop_exporters(fresh)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def following_exporters(kafka: KafkaCluster, **settings: Any) -> list[tuple[Exporter, asyncio.Task[None]]]:
    """Two exporters counting run events, one from Prefect's event stream, one from Kafka, with the
    same ``settings`` (e.g. ``history_hours``)."""
    pair = []
    for source in SOURCES:
        exporter = Exporter(ExporterSettings(port=0, source=source, **settings), kafka.bootstrap)
        pair.append((exporter, asyncio.create_task(exporter.follow())))
    return pair


async def stop_exporters(pair: list[tuple[Exporter, asyncio.Task[None]]]) -> None:
    for _, task in pair:
        task.cancel()
    await asyncio.gather(*(task for _, task in pair), return_exceptions=True)


def run_samples(exporter: Exporter, scripts_: set[str], hosts_: set[str]) -> Samples:
    """The exporter's run metrics about ``scripts_`` (or, without a script label, ``hosts_``)."""
    found: Samples = {}
    for family in exporter.served.runs.registry.collect():
        for sample in family.samples:
            about = sample.labels.get("script") in scripts_ if "script" in sample.labels else (
                sample.labels.get("host") in hosts_)
            if about and not sample.name.endswith("_created"):
                found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def same_counts(pair: list[tuple[Exporter, asyncio.Task[None]]], scripts_: set[str], hosts_: set[str],
                      ready: Callable[[Samples], bool], timeout: float = 90) -> None:
    """Waits until both exporters show the same run metrics and ``ready`` holds for them."""
    deadline = time.monotonic() + timeout
    while True:
        for exporter, task in pair:
            assert not task.done(), f"the {exporter.settings.source} exporter stopped: {task}"
        from_prefect, from_kafka = (run_samples(exporter, scripts_, hosts_) for exporter, _ in pair)
        if from_prefect == from_kafka and ready(from_prefect):
            return
        if time.monotonic() > deadline:
            assert from_kafka == from_prefect
            raise AssertionError(f"the exporters did not count every run: {from_prefect}")
        await asyncio.sleep(0.5)


def test_the_example_consumer_reports_each_failed_host_once(catalog, kafka, publisher):
    script, run_id = unique("events-example"), str(uuid.uuid4())
    with catalog.session() as s:
        outbox.append(s, [outbox.host_event(script, run_id, "web-1", "succeeded", exit_code=0, seconds=1.0),
                          outbox.host_event(script, run_id, "web-2", "failed", exit_code=3, seconds=1.0)])
    wait_until(lambda: unpublished(catalog, script) == 0, 60, "the events were not published")
    failed = read_events(kafka.bootstrap, script, lambda events: len(events) >= 2)["sms.runs"][1]
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    producer.produce("sms.runs", key=script, value=json.dumps(failed))  # the same event again, as a re-send
    assert producer.flush(30) == 0
    with catalog.session() as s:
        outbox.append(s, [outbox.host_event(script, run_id, "web-3", "unreachable")])

    lines: list[str] = []
    consumer = events_consumer.consumer_for(kafka.bootstrap, f"test-{uuid.uuid4()}")
    deadline = time.monotonic() + 60
    try:
        events_consumer.consume(consumer, lines.append, keep_going=lambda: time.monotonic() < deadline and not any(
            "web-3" in line and script in line for line in lines))
    finally:
        consumer.close()
    assert [line for line in lines if script in line] == [
        f"{script} failed on web-2 (exit code 3), run {run_id}", f"{script} unreachable on web-3, run {run_id}"]
