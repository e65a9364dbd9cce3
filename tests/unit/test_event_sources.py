"""Prefect's events as SMS events, and SMS events back as the exporter's facts: a run fact read from
Kafka equals the one read from Prefect's event stream (but for its id); host blocks' lifecycle
events become ``sms.host.*``, other blocks' none."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun
from prefect.events import Event

from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.deploy import FLOW_NAME
from sms_plugin.events.cloudevent import record
from sms_plugin.events.run_source import RunLabels, event_id, outbox_row
from sms_plugin.telemetry.kafka_source import fact_of
from sms_plugin.telemetry.metrics import RunMetrics
from sms_plugin.telemetry.sources import apply_sms_event, state_from_event

STARTED = datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=UTC)


def through_kafka(row: dict) -> dict:
    """The CloudEvent a consumer reads for an outbox row."""
    return json.loads(record(OutboxEvent(**row))[1])


def state_event(run_id: uuid.UUID, state_type: str, name: str, at: datetime) -> Event:
    return Event(
        event=f"prefect.flow-run.{name}", occurred=at + timedelta(milliseconds=3), id=uuid.uuid4(),
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.state-type": state_type,
                  "prefect.state-name": name, "prefect.state-timestamp": at.isoformat()},
        related=[{"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}", "prefect.resource.role": "flow",
                  "prefect.resource.name": FLOW_NAME}],
    )


def test_a_run_state_from_kafka_is_the_state_from_prefect():
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), parameters={"script": "backup", "host": "web-1"},
                       start_time=STARTED)
    for state_type, name, at in (("RUNNING", "Running", STARTED), ("FAILED", "Failed", STARTED + timedelta(seconds=2.5))):
        event = state_event(flow_run.id, state_type, name, at)
        from_prefect = state_from_event(event, flow_run)
        cloud_event = through_kafka(outbox_row(event, RunLabels("backup", "web-1", STARTED)))
        from_kafka = fact_of(cloud_event)
        assert cloud_event["id"] == event_id(event.id) and cloud_event["time"] == at.isoformat().replace("+00:00", "Z")
        if state_type == "RUNNING":  # the time it ran is told on an end state only (and counted only there)
            from_prefect = dataclasses.replace(from_prefect, duration_seconds=None)
        assert from_kafka == dataclasses.replace(from_prefect, state_id=cloud_event["id"])
    assert from_kafka.duration_seconds == 2.5


def test_sms_events_from_kafka_count_as_from_prefect():
    run = uuid.uuid4()
    finished = Event(event="sms.run.finished", occurred=STARTED, id=uuid.uuid4(),
                     resource={"prefect.resource.id": f"sms.run.{run}", "sms.script": "backup", "sms.host": "web-1"},
                     payload={"exit_code": 3, "timed_out": False, "lines": {"stdout": 12, "stderr": 1}})
    failed = Event(event="sms.transport.error", occurred=STARTED, id=uuid.uuid4(),
                   resource={"prefect.resource.id": "sms.host.web-2", "sms.host": "web-2", "sms.script": "backup"},
                   payload={"kind": "host_unreachable", "unreachable": True})
    from_prefect, from_kafka = RunMetrics(), RunMetrics()
    for event in (finished, failed):
        assert apply_sms_event(from_prefect, event)
        fact = fact_of(through_kafka(outbox_row(event)))
        assert fact is not None and from_kafka.apply(fact) and not from_kafka.apply(fact)  # once per id
    samples = [{(s.name, tuple(sorted(s.labels.items()))): s.value for f in m.registry.collect() for s in f.samples
                if not s.name.endswith("_created")} for m in (from_prefect, from_kafka)]
    assert samples[0] == samples[1]
    assert samples[1][("sms_script_output_lines_total", (("script", "backup"), ("stream", "stdout")))] == 12
    assert samples[1][("sms_host_executions_total", (("host", "web-2"), ("outcome", "unreachable"), ("script", "backup")))] == 1


def block_event(action: str, name: str, block_type: str) -> Event:
    return Event(
        event=f"prefect.block-document.{action}", occurred=STARTED, id=uuid.uuid4(),
        resource={"prefect.resource.id": f"prefect.block-document.{uuid.uuid4()}", "prefect.resource.name": name},
        related=[{"prefect.resource.id": f"prefect.block-type.{uuid.uuid4()}", "prefect.resource.role": "block-type",
                  "prefect.resource.name": block_type}],
        payload={"name": name, "data": {"address": "10.0.0.7", "username": "deploy"}},
    )


def test_host_blocks_become_host_events_and_other_blocks_none():
    rows = [outbox_row(block_event(action, "web-1", "SMS SSH Host")) for action in ("created", "updated", "deleted")]
    assert [(row["type"], row["key"], row["topic"], row["data"]) for row in rows] == [
        (f"sms.host.{verb}", "host:web-1", "sms.catalog", {"host": "web-1", "kind": "ssh"})
        for verb in ("added", "changed", "removed")]
    assert outbox_row(block_event("created", "win-1", "SMS Windows Host"))["data"] == {"host": "win-1", "kind": "windows"}
    assert outbox_row(block_event("created", "db-password", "Secret")) is None
    assert fact_of(through_kafka(rows[0])) is None  # not a run fact


def test_a_malformed_sms_event_is_skipped_and_the_next_one_counted(caplog):
    """Anyone who may write to Prefect can emit one: a rebuild reading it must go on."""
    malformed = Event(event="sms.run.finished", occurred=STARTED, id=uuid.uuid4(),
                      resource={"prefect.resource.id": f"sms.run.{uuid.uuid4()}", "sms.script": "backup"},
                      payload={"lines": {"stdout": 5}})
    valid = Event(event="sms.run.finished", occurred=STARTED, id=uuid.uuid4(),
                  resource={"prefect.resource.id": f"sms.run.{uuid.uuid4()}", "sms.script": "backup", "sms.host": "web-1"},
                  payload={"exit_code": 0, "lines": {"stdout": 2}})
    metrics = RunMetrics()
    assert not apply_sms_event(metrics, malformed)
    assert "skipped event" in caplog.text and "exit_code" in caplog.text
    assert apply_sms_event(metrics, valid)
    lines = {s.labels["stream"]: s.value for f in metrics.registry.collect() for s in f.samples
             if s.name == "sms_script_output_lines_total"}
    assert lines == {"stdout": 2}
