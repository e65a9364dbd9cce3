"""Event → metric mapping and de-duplication of the metrics exporter (no peers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.events import Event

from sms_plugin import run_events
from sms_plugin.errors import HostKeyError
from sms_plugin.telemetry import sources
from sms_plugin.telemetry.metrics import RunFinished, RunMetrics, RunState, ServiceMetrics, TransportFailed

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _state(state_type: str, *, run: str = "r1", at: int = 0, state_id: str | None = None, **extra) -> RunState:
    return RunState(state_id=state_id or str(uuid.uuid4()), run_id=run, script=extra.pop("script", "backup"),
                    host=extra.pop("host", "web"), state_type=state_type, timestamp=T0 + timedelta(seconds=at), **extra)


def _get(metrics: RunMetrics | ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_run_is_running_then_counted_once_with_its_duration():
    metrics = RunMetrics()
    running = _state("RUNNING", at=1)
    completed = _state("COMPLETED", at=5, duration_seconds=4.0)
    assert metrics.apply_state(running)
    assert _get(metrics, "sms_script_running", script="backup", host="web") == 1
    assert metrics.apply_state(completed)
    assert not metrics.apply_state(completed)  # the same state again (stream replay after a rebuild)
    assert _get(metrics, "sms_script_running", script="backup", host="web") == 0
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="completed") == 1
    assert _get(metrics, "sms_script_run_duration_seconds_count", script="backup", host="web") == 1
    assert _get(metrics, "sms_script_run_duration_seconds_sum", script="backup", host="web") == 4.0
    assert _get(metrics, "sms_script_run_duration_seconds_bucket", script="backup", host="web", le="5.0") == 1
    assert _get(metrics, "sms_script_run_duration_seconds_bucket", script="backup", host="web", le="2.5") == 0
    assert _get(metrics, "sms_script_last_success_timestamp_seconds", script="backup") == (T0 + timedelta(seconds=5)).timestamp()


def test_a_replayed_older_state_does_not_bring_a_finished_run_back_to_running():
    metrics = RunMetrics()
    metrics.apply_state(_state("FAILED", at=10, duration_seconds=1.0))  # what a rebuild read
    assert not metrics.apply_state(_state("RUNNING", at=2))  # then the stream replays an earlier state
    assert _get(metrics, "sms_script_running", script="backup", host="web") == 0
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="failed") == 1


def test_states_are_counted_by_type_and_last_success_only_moves_forward():
    metrics = RunMetrics()
    metrics.apply_state(_state("COMPLETED", run="a", at=20))
    metrics.apply_state(_state("COMPLETED", run="b", at=10))  # ended earlier, reported later
    metrics.apply_state(_state("CANCELLED", run="c", at=30))
    metrics.apply_state(_state("CRASHED", run="d", at=31, host="db"))
    metrics.apply_state(_state("SCHEDULED", run="e", at=32))  # not an end: not counted
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="completed") == 2
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="cancelled") == 1
    assert _get(metrics, "sms_script_runs_total", script="backup", host="db", state="crashed") == 1
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="scheduled") is None
    assert _get(metrics, "sms_script_last_success_timestamp_seconds", script="backup") == (T0 + timedelta(seconds=20)).timestamp()


def test_finished_events_count_lines_once_and_keep_the_newest_exit_code():
    metrics = RunMetrics()
    newer = RunFinished("e2", "backup", "web", 7, T0 + timedelta(seconds=9), {"stdout": 3, "stderr": 0})
    older = RunFinished("e1", "backup", "web", 0, T0, {"stdout": 2, "stderr": 1})
    assert metrics.apply_finished(newer)
    assert metrics.apply_finished(older)
    assert not metrics.apply_finished(older)
    assert _get(metrics, "sms_script_output_lines_total", script="backup", stream="stdout") == 5
    assert _get(metrics, "sms_script_output_lines_total", script="backup", stream="stderr") == 1
    assert _get(metrics, "sms_script_last_exit_code", script="backup") == 7


def test_transport_errors_count_once_per_event():
    metrics = RunMetrics()
    failure = TransportFailed("e1", "web", "host_key_error", T0)
    assert metrics.apply_transport_error(failure)
    assert not metrics.apply_transport_error(failure)
    assert _get(metrics, "sms_transport_errors_total", host="web", kind="host_key_error") == 1


def test_facts_from_before_the_window_are_ignored():
    metrics = RunMetrics(since=T0)
    metrics.apply_state(_state("RUNNING", run="long", at=-5))  # still running: shown, whenever it started
    metrics.apply_state(_state("COMPLETED", at=-1))
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="completed") is None
    assert _get(metrics, "sms_script_running", script="backup", host="web") == 1
    assert not metrics.apply_finished(RunFinished("e1", "backup", "web", 0, T0 - timedelta(seconds=1), {"stdout": 1}))
    assert not metrics.apply_transport_error(TransportFailed("e2", "web", "x", T0 - timedelta(seconds=1)))
    assert metrics.apply_state(_state("COMPLETED", at=0))
    assert _get(metrics, "sms_script_runs_total", script="backup", host="web", state="completed") == 1
    assert _get(metrics, "sms_script_output_lines_total", script="backup", stream="stdout") is None


def test_set_labelled_drops_hosts_that_are_gone():
    service = ServiceMetrics()
    service.set_labelled(service.host_up, {"web": 1, "db": 0})
    service.set_labelled(service.host_up, {"web": 0})
    assert _get(service, "sms_host_up", host="web") == 0
    assert _get(service, "sms_host_up", host="db") is None


def test_one_host_is_set_alone_and_keep_only_drops_the_others():
    service = ServiceMetrics()
    service.set_one(service.host_up, "web", 1)
    service.set_one(service.host_up, "db", 0)
    service.set_one(service.host_up, "web", 0)
    assert (_get(service, "sms_host_up", host="web"), _get(service, "sms_host_up", host="db")) == (0, 0)
    assert service.labels_of(service.host_up) == {"web", "db"}
    service.keep_only(service.host_up, ["db", "new"])  # "new" has no check yet: no series for it
    assert _get(service, "sms_host_up", host="web") is None
    assert _get(service, "sms_host_up", host="new") is None
    assert service.labels_of(service.host_up) == {"db"}
    service.set_labelled(service.host_up, {"mail": 1})  # after keep_only, the bookkeeping still holds
    assert service.labels_of(service.host_up) == {"mail"} and _get(service, "sms_host_up", host="db") is None


# --------------------------------------------------------------------------- Prefect objects → facts


def _flow_run(**fields) -> FlowRun:
    return FlowRun(flow_id=uuid.uuid4(), **fields)


def test_labels_come_from_parameters_then_the_deployment_host_tag():
    assert sources.labels_of(_flow_run(parameters={"script": "s", "host": "h"}, tags=["host:other"])) == ("s", "h")
    assert sources.labels_of(_flow_run(parameters={"script": "s"}, tags=["sms", "host:web"])) == ("s", "web")
    assert sources.labels_of(_flow_run(parameters={})) == ("unknown", "unknown")


def _state_event(name: str, state_type: str | None, flow: str = "run-script", run_id: uuid.UUID | None = None) -> Event:
    resource = {"prefect.resource.id": f"prefect.flow-run.{run_id or uuid.uuid4()}"}
    if state_type:
        resource |= {"prefect.state-type": state_type, "prefect.state-timestamp": T0.isoformat()}
    related = [{"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}", "prefect.resource.role": "flow",
                "prefect.resource.name": flow}]
    return Event(occurred=T0, event=f"prefect.flow-run.{name}", resource=resource, related=related)


def test_only_state_events_of_run_script_are_run_states():
    assert sources.is_run_script_state(_state_event("Completed", "COMPLETED"))
    assert not sources.is_run_script_state(_state_event("Completed", "COMPLETED", flow="sms-housekeeping"))
    assert not sources.is_run_script_state(_state_event("heartbeat", None))


def test_a_state_event_becomes_a_fact_with_the_runs_labels_and_running_time():
    run_id = uuid.uuid4()
    event = _state_event("Failed", "FAILED", run_id=run_id)
    # Duration = the state's time minus the run's start, whatever total_run_time says yet.
    flow_run = _flow_run(id=run_id, parameters={"script": "s", "host": "h"}, start_time=T0 - timedelta(seconds=3),
                         total_run_time=timedelta(seconds=0))
    assert sources.run_id_of(event) == str(run_id)
    assert sources.state_from_event(event, flow_run) == RunState(
        state_id=str(event.id), run_id=str(run_id), script="s", host="h", state_type="FAILED", timestamp=T0,
        duration_seconds=3.0)
    never_ran = _flow_run(id=run_id, parameters={"script": "s", "host": "h"})
    assert sources.state_from_event(event, never_ran).duration_seconds == 0.0


def test_sms_events_map_to_their_metrics():
    metrics = RunMetrics()
    finished = Event(occurred=T0, event=run_events.RUN_FINISHED,
                     resource={"prefect.resource.id": "sms.run.1", "sms.script": "s", "sms.host": "h"},
                     payload={"exit_code": 2, "timed_out": False, "lines": {"stdout": 4, "stderr": 1}})
    failed = Event(occurred=T0, event=run_events.TRANSPORT_ERROR,
                   resource={"prefect.resource.id": "sms.host.h", "sms.host": "h", "sms.script": "s"},
                   payload={"kind": run_events.error_kind(HostKeyError("changed"))})
    assert sources.apply_sms_event(metrics, finished) and sources.apply_sms_event(metrics, failed)
    assert not sources.apply_sms_event(metrics, finished)
    assert _get(metrics, "sms_script_output_lines_total", script="s", stream="stdout") == 4
    assert _get(metrics, "sms_script_last_exit_code", script="s") == 2
    assert _get(metrics, "sms_transport_errors_total", host="h", kind="host_key_error") == 1


def test_schedule_intervals():
    assert sources._interval_seconds(IntervalSchedule(interval=timedelta(minutes=5)), T0) == 300
    assert sources._interval_seconds(CronSchedule(cron="0 3 * * *"), T0) == 86400
    assert sources._interval_seconds(CronSchedule(cron="*/15 * * * *"), T0) == 900
