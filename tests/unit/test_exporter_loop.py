"""The exporter's follow loop with a fake Prefect (client and event stream): a lost subscription
is re-subscribed, the rebuild covers what happened meanwhile, and the replay counts nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.events import Event
from prefect.states import Completed, Running, State

from sms_plugin.telemetry import exporter as exporter_module
from sms_plugin.telemetry import sources
from sms_plugin.telemetry.exporter import Exporter, ExporterSettings
from sms_plugin.telemetry.metrics import RunMetrics


def _run(state: State, run_id: uuid.UUID | None = None, seconds: float = 0.0) -> FlowRun:
    """A run in ``state`` that started ``seconds`` before that state."""
    return FlowRun(id=run_id or uuid.uuid4(), flow_id=uuid.uuid4(), parameters={"script": "s", "host": "h"},
                   state=state, start_time=state.timestamp - timedelta(seconds=seconds))


def _event(flow_run: FlowRun) -> Event:
    state = flow_run.state
    assert state is not None
    return Event(
        id=state.id, occurred=state.timestamp, event=f"prefect.flow-run.{state.name}",
        resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.state-type": state.type.value,
                  "prefect.state-timestamp": state.timestamp.isoformat()},
        related=[{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow",
                  "prefect.resource.name": "run-script"}],
    )


class FakePrefect:
    """What the API says now (``runs``) and what each subscription will deliver."""

    def __init__(self) -> None:
        self.runs: dict[str, FlowRun] = {}
        self.subscriptions: list[list[Event | Exception]] = []

    async def __aenter__(self) -> FakePrefect:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def read_flow_run(self, run_id: str) -> FlowRun:
        return self.runs[str(run_id)]

    def subscriber(self, **_: object) -> FakeSubscription:
        return FakeSubscription(self.subscriptions.pop(0))


class FakeSubscription:
    def __init__(self, items: list[Event | Exception]) -> None:
        self.items = items

    async def __aenter__(self) -> FakeSubscription:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def __aiter__(self) -> FakeSubscription:
        return self

    async def __anext__(self) -> Event:
        if not self.items:
            await asyncio.Event().wait()  # an idle, open stream
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


async def _fake_rebuild(metrics: RunMetrics, client: FakePrefect) -> None:
    for flow_run in client.runs.values():
        if fact := sources.current_state(flow_run):
            metrics.apply_state(fact)


async def test_a_lost_stream_is_followed_again_after_a_rebuild_and_nothing_is_counted_twice(monkeypatch):
    prefect = FakePrefect()
    run_id = uuid.uuid4()
    running = _run(Running(), run_id)
    prefect.runs[str(run_id)] = running
    completed = _run(Completed(), run_id, seconds=1.5)  # what happens while the exporter is disconnected
    other = _run(Completed(), seconds=0.2)

    class Lost(OSError):
        def __init__(self) -> None:
            super().__init__("connection lost")
            prefect.runs[str(run_id)] = completed

    prefect.subscriptions = [
        [_event(running), Lost()],
        [_event(running), _event(completed), _event(other)],  # the replay after re-subscribing, then a new run
    ]
    monkeypatch.setattr(exporter_module, "get_client", lambda: prefect)
    monkeypatch.setattr(exporter_module, "get_events_subscriber", prefect.subscriber)
    monkeypatch.setattr(exporter_module, "_RETRY_SECONDS", 0)
    monkeypatch.setattr(sources, "rebuild", _fake_rebuild)
    exporter = Exporter(ExporterSettings(port=0, history_hours=1))
    original_count = exporter._count

    async def count(client, metrics, event):
        if event.id == other.state.id:
            prefect.runs[str(other.id)] = other
        return await original_count(client, metrics, event)

    monkeypatch.setattr(exporter, "_count", count)

    def value(name: str, **labels: str) -> float | None:
        return exporter.served.runs.registry.get_sample_value(name, labels)

    following = asyncio.create_task(exporter.follow())
    try:
        for _ in range(100):
            if value("sms_script_runs_total", script="s", host="h", state="completed") == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        following.cancel()

    assert value("sms_script_runs_total", script="s", host="h", state="completed") == 2
    assert value("sms_script_running", script="s", host="h") == 0
    assert value("sms_script_run_duration_seconds_sum", script="s", host="h") == pytest.approx(1.7)
    service = exporter.service.registry.get_sample_value
    assert (service("sms_exporter_reconnects_total"), service("sms_exporter_rebuilds_total")) == (1, 2)
    assert service("sms_exporter_connected") == 1
    assert service("sms_exporter_last_event_timestamp_seconds") == other.state.timestamp.timestamp()
