"""One emitter thread sends the flow-run heartbeats of every run of the sms worker."""

from __future__ import annotations

import contextlib
import threading
import time
from types import SimpleNamespace

import pytest

from sms_plugin.worker import flow_heartbeats


class Engine:
    """The parts of Prefect's flow run engine that heartbeats use."""

    def __init__(self, seconds: float | None) -> None:
        self.heartbeat_seconds = seconds
        self.flow_run = SimpleNamespace(state=SimpleNamespace(is_final=lambda: False))
        self.beats: list[tuple[float, str]] = []

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[object]]:
        return {"prefect.resource.id": f"prefect.flow-run.{id(self)}"}, []

    def _emit_flow_run_heartbeat(self, resource: dict[str, str], related: list[object]) -> None:
        self.beats.append((time.monotonic(), threading.current_thread().name))


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_heartbeats, "TICK_SECONDS", 0.02)


def test_many_runs_share_one_thread_and_stop_when_they_end():
    engines = [Engine(0.1) for _ in range(50)]
    threads_before = threading.active_count()
    with contextlib.ExitStack() as stack:
        for engine in engines:
            stack.enter_context(flow_heartbeats.send_heartbeats(engine))
        time.sleep(0.35)
        assert threading.active_count() <= threads_before + 1  # at most the one emitter thread
    counts = [len(e.beats) for e in engines]
    assert all(3 <= n <= 5 for n in counts), counts  # at once, then every 0.1 s
    assert {name for e in engines for _, name in e.beats} == {"sms-flow-heartbeats"}
    time.sleep(0.2)
    assert [len(e.beats) for e in engines] == counts  # none after the run ended


def test_no_heartbeats_when_prefect_has_them_off_or_the_run_is_final():
    off, final = Engine(None), Engine(0.05)
    final.flow_run.state = SimpleNamespace(is_final=lambda: True)
    with flow_heartbeats.send_heartbeats(off), flow_heartbeats.send_heartbeats(final):
        time.sleep(0.2)
    assert off.beats == [] and final.beats == []

