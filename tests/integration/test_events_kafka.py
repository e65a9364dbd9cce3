"""``sms events`` against a real Kafka broker (KRaft, the test bed's) and a real Prefect server.

Events are read back by a real consumer (confluent-kafka) from topics ``sms.catalog`` and
``sms.runs``; each test uses its own script names (the record keys), so tests share the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer
from prefect import get_client
from prefect.states import Cancelling
from prometheus_client.parser import text_string_to_metric_families

from flows.run_script import run_script
from infra.testbed.kafka import KafkaCluster
from infra.testbed.ports import free_port
from infra.testbed.prefect_server import prefect_env, venv_binary
from infra.testbed.process import Peer
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec, add_script, add_version
from sms_plugin.catalog.models import OutboxEvent
from tests.integration.conftest import block_of

pytestmark = pytest.mark.integration

TOPICS = ("sms.catalog", "sms.runs")


class EventsPublisher(Peer):
    """``sms events`` as its own process, on the test's catalog (SMS_HOME) and Prefect server."""

    name = "sms-events"

    def __init__(self, api_url: str, bootstrap: str) -> None:
        super().__init__(timeout=60, grace=10)
        self.api_url, self.bootstrap, self.port = api_url, bootstrap, free_port()

    def _start(self) -> None:
        assert self.tmp is not None
        env = prefect_env(self.tmp / "prefect-home", {
            "PREFECT_API_URL": self.api_url, "SMS_KAFKA_BOOTSTRAP": self.bootstrap,
            "SMS_EVENTS_METRICS_PORT": str(self.port), "SMS_EVENTS_SEND_TIMEOUT_SECONDS": "5"})
        self.spawn([venv_binary("sms"), "events"], lambda: self.value("sms_events_published_position") is not None,
                   env=env)

    def value(self, name: str) -> float | None:
        text = httpx.get(f"http://{self.host}:{self.port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return sample.value
        return None

    def kill(self) -> None:
        """SIGKILL, as a crash: no delivery report is waited for, nothing is flushed."""
        assert self.process is not None and self.process.popen is not None
        os.kill(self.process.popen.pid, signal.SIGKILL)
        self.process.popen.wait(10)
        self.process.stop(0)
        self.process = None

    def restart(self) -> None:
        assert self.process is None, "kill() first"
        self._start()


@pytest.fixture
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
    return [e["data"]["state"] for e in events if e["data"].get("run_id") == run_id and e["type"] != "sms.run.finished"]


@pytest.mark.timeout(600)  # the session's peers (Prefect, worker, sshd, Kafka) start in this test's setup
async def test_a_scripts_whole_life_arrives_in_order(catalog, ssh_server, prefect_worker, kafka, publisher):
    host, name = unique("events-ssh"), unique("events-life")
    await hosts.add(host, block_of(ssh_server))
    spec = ScriptSpec(name=name, interpreter="bash", host=host)
    await scripts.add(catalog, spec, "echo ok\n", author="tests")
    completed = await run_script(script=name, host=host, return_state=True)
    await scripts.update(catalog, spec, "echo bad >&2\nexit 3\n", author="tests")
    failed = await run_script(script=name, host=host, return_state=True)
    await scripts.update(catalog, spec.model_copy(update={"timeout_seconds": 300}), "echo started\nsleep 120\n",
                         author="tests")
    cancelled = await runs.start(catalog, name, trigger="cli", user="tests")
    await runs_reach_running(cancelled)
    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(cancelled), Cancelling(), force=True)
    assert (await runs.wait(catalog, cancelled, timeout=60, poll=0.2)).state == "CANCELLED"
    await scripts.remove(catalog, name, author="tests")
    assert completed.is_completed() and failed.is_failed()
    ids = {str(completed.state_details.flow_run_id), str(failed.state_details.flow_run_id), cancelled}

    def complete(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == "sms.script.removed" for e in events) and any(
            e["type"] == "sms.run.cancelled" for e in events)

    found = read_events(kafka.bootstrap, name, complete)
    catalog_events = found["sms.catalog"]
    assert [(e["type"], e["data"].get("version")) for e in catalog_events] == [
        ("sms.script.added", None), ("sms.script.version.pushed", 1), ("sms.script.version.pushed", 2),
        ("sms.script.changed", None), ("sms.script.version.pushed", 3), ("sms.script.removed", None),
    ]
    assert catalog_events[3]["data"]["changed"] == ["timeout_seconds"]
    for event in catalog_events + found["sms.runs"]:
        assert event["specversion"] == "1.0" and event["id"] and event["time"].endswith("Z")
    run_events = found["sms.runs"]
    assert {e["data"]["run_id"] for e in run_events} == ids
    first, second = (str(s.state_details.flow_run_id) for s in (completed, failed))
    assert states(run_events, first) == ["Pending", "Running", "Completed"]
    assert states(run_events, second) == ["Pending", "Running", "Failed"]
    assert states(run_events, cancelled) == ["Scheduled", "Pending", "Submitting", "Running", "Cancelling", "Cancelled"]
    finished = {e["data"]["run_id"]: e["data"]["exit_code"] for e in run_events if e["type"] == "sms.run.finished"}
    assert finished[first] == 0 and finished[second] == 3
    # One script's run events keep their order: every state of a run comes after the previous run's end.
    order = [e["data"]["run_id"] for e in run_events if e["type"] != "sms.run.finished"]
    assert order == sorted(order, key=[first, second, cancelled].index)
    assert len({e["id"] for e in catalog_events + run_events}) == len(catalog_events) + len(run_events)


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


def test_events_wait_in_the_outbox_while_kafka_is_down(catalog, kafka, publisher):
    name = unique("events-outage")
    add(catalog, name)
    wait_until(lambda: publisher.value("sms_events_outbox_backlog") == 0, 30, "the first events were never sent")
    kafka.halt()
    try:
        push_versions(catalog, name, range(1, 6))
        wait_until(lambda: (publisher.value("sms_events_outbox_backlog") or 0) >= 5, 30, "backlog not reported")
        time.sleep(8)  # longer than the send timeout: the sends fail and wait in the outbox
        assert (publisher.value("sms_events_send_failures_total") or 0) >= 1
        assert (publisher.value("sms_events_outbox_backlog") or 0) >= 5
    finally:
        kafka.resume()
    expected = outbox_ids(catalog, name)
    found = read_events(kafka.bootstrap, name, lambda events: {e["id"] for e in events} >= set(expected), timeout=90)
    deduplicated = first_copies(found["sms.catalog"])
    assert [e["id"] for e in deduplicated] == expected
    assert [e["data"].get("version") for e in deduplicated] == [None, 1, 2, 3, 4, 5, 6]  # added with 1, then 5 pushes
    wait_until(lambda: publisher.value("sms_events_outbox_backlog") == 0, 30, "the backlog was not drained")
