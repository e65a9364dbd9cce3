"""Per-host metrics of fleet runs: every host execution counted once, by script, host and outcome."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prefect.client.schemas.objects import FlowRun
from prefect.events import Event

from sms_plugin import run_events
from sms_plugin.errors import HostUnreachable
from sms_plugin.telemetry import sources
from sms_plugin.telemetry.metrics import RunMetrics

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _finished(host: str, exit_code: int, timed_out: bool = False) -> Event:
    return Event(occurred=T0, event=run_events.RUN_FINISHED,
                 resource={"prefect.resource.id": "sms.run.1", "sms.script": "rotate", "sms.host": host},
                 payload={"exit_code": exit_code, "timed_out": timed_out, "lines": {"stdout": 1, "stderr": 0}})


def _transport_error(host: str, unreachable: bool | None) -> Event:
    payload: dict[str, object] = {"kind": run_events.error_kind(HostUnreachable("refused"))}
    if unreachable is not None:
        payload["unreachable"] = unreachable
    return Event(occurred=T0, event=run_events.TRANSPORT_ERROR,
                 resource={"prefect.resource.id": f"sms.host.{host}", "sms.host": host, "sms.script": "rotate"},
                 payload=payload)


def test_each_host_execution_of_a_fleet_run_is_counted_by_host_and_outcome() -> None:
    metrics = RunMetrics()
    events = [_finished("web-01", 0), _finished("web-02", 0), _finished("web-03", 3), _finished("web-04", 143, True),
              _transport_error("web-05", True), _transport_error("web-06", False), _transport_error("old", None)]
    for event in events:
        assert sources.apply_sms_event(metrics, event)
    assert not sources.apply_sms_event(metrics, events[0])  # the same event again (a replay)

    def count(host: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value("sms_host_executions_total",
                                                 {"script": "rotate", "host": host, "outcome": outcome})

    assert [count("web-01", "succeeded"), count("web-02", "succeeded"), count("web-03", "failed"),
            count("web-04", "timed_out"), count("web-05", "unreachable"), count("web-06", "failed")] == [1] * 6
    assert count("old", "unreachable") is None and count("old", "failed") is None  # an event without the field
    assert metrics.registry.get_sample_value("sms_transport_errors_total", {"host": "web-05", "kind": "host_unreachable"}) == 1


def test_a_fleet_run_is_labelled_fleet_not_one_of_its_hosts() -> None:
    def labels(parameters: dict[str, object], tags: list[str]) -> tuple[str, str]:
        run = FlowRun(id=uuid.uuid4(), name="r", flow_id=uuid.uuid4(), parameters=parameters, tags=tags)
        return sources.labels_of(run)

    assert labels({"script": "s", "hosts": ["a", "b"]}, ["host:a", "sms"]) == ("s", "fleet")
    assert labels({"script": "s"}, ["fleet", "sms"]) == ("s", "fleet")  # a script targeting a selector
    assert labels({"script": "s", "host": "b"}, ["fleet", "sms"]) == ("s", "b")
    assert labels({"script": "s"}, ["host:a", "sms"]) == ("s", "a")
