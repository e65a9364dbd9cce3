"""SMS's Prometheus metrics and how run facts change them, each fact counted once.

:class:`RunMetrics` holds the metrics about runs. It is fed *facts* (a flow run reached a state,
a script finished with an exit code, a transport failed), each carrying the id of the Prefect
state or event it comes from; a fact whose id was seen already is ignored, so a rebuild from
Prefect's API followed by the event stream's replay counts everything exactly once.
A state older than the newest state applied for the same run is ignored too (replayed events).

:class:`ServiceMetrics` holds what outlives a rebuild: the host probe and the exporter's health.

Labels are bounded: script, host, state type, stream, error kind; never a run id.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
"""Prefect state types that end a run; ``sms_script_runs_total`` counts these."""

DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_MEMORY_SECONDS = 6 * 3600
"""How long the ids of counted facts and each run's newest state are remembered; Prefect's
event stream replays at most a few minutes, and a reconnect after a longer gap rebuilds."""
_MEMORY_SIZE = 1_000_000


@dataclass(frozen=True)
class RunState:
    """A flow run of ``run-script`` entering a state."""

    state_id: str
    run_id: str
    script: str
    host: str
    state_type: str
    """Prefect's state type: RUNNING, COMPLETED, FAILED, CANCELLED, CRASHED, ..."""
    timestamp: datetime
    duration_seconds: float | None = None
    """Time spent running, for terminal states."""

    @property
    def occurred(self) -> datetime:
        return self.timestamp


@dataclass(frozen=True)
class RunFinished:
    """The script of a run ended with an exit code (event ``sms.run.finished``)."""

    event_id: str
    script: str
    host: str
    exit_code: int
    occurred: datetime
    lines: Mapping[str, int]
    timed_out: bool = False

    @property
    def outcome(self) -> str:
        """The host execution's outcome: succeeded, failed or timed_out."""
        return "timed_out" if self.timed_out else "succeeded" if self.exit_code == 0 else "failed"


@dataclass(frozen=True)
class TransportFailed:
    """A run could not use its host (event ``sms.transport.error``)."""

    event_id: str
    host: str
    kind: str
    occurred: datetime
    script: str = "unknown"
    unreachable: bool | None = None
    """True: the transport could not be opened (the host execution is ``unreachable``); False: it broke
    once open (``failed``); None: an event from before SMS said (not counted per host execution)."""


class RunMetrics:
    """Metrics about script runs, in their own registry (a rebuild replaces the whole object).

    Runs that ended and events that happened before ``since`` (the rebuild's history window) are
    not counted, also when the event stream replays them, so that the counters cover one span.
    """

    def __init__(self, since: datetime | None = None) -> None:
        self.since = since
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("sms_script_runs", "Runs that ended, by Prefect state type.",
                            ["script", "host", "state"], registry=r)
        self.duration = Histogram("sms_script_run_duration_seconds", "Time runs spent running.",
                                  ["script", "host"], buckets=DURATION_BUCKETS, registry=r)
        self.running = Gauge("sms_script_running", "Runs in state Running now.", ["script", "host"], registry=r)
        self.last_exit_code = Gauge("sms_script_last_exit_code", "Exit code of the script's latest run.",
                                    ["script"], registry=r)
        self.last_success = Gauge("sms_script_last_success_timestamp_seconds",
                                  "When the script's latest Completed run ended (Unix time).", ["script"], registry=r)
        self.output_lines = Counter("sms_script_output_lines", "Output lines printed by runs of the script.",
                                    ["script", "stream"], registry=r)
        self.transport_errors = Counter("sms_transport_errors", "Runs that could not use their host, by error kind.",
                                        ["host", "kind"], registry=r)
        self.host_executions = Counter(
            "sms_host_executions", "Host executions that ended (a fleet run has one per host), by outcome.",
            ["script", "host", "outcome"], registry=r)
        self._seen: TTLCache[str, bool] = TTLCache(_MEMORY_SIZE, _MEMORY_SECONDS)
        self._newest: TTLCache[str, datetime] = TTLCache(_MEMORY_SIZE, _MEMORY_SECONDS)
        self._running: dict[str, tuple[str, str]] = {}
        self._exit_times: dict[str, datetime] = {}
        self._success_times: dict[str, float] = {}

    @property
    def scripts_with_success(self) -> set[str]:
        return set(self._success_times)

    def _in_window(self, at: datetime) -> bool:
        return self.since is None or at >= self.since

    def _first_time(self, fact_id: str) -> bool:
        if fact_id in self._seen:
            return False
        self._seen[fact_id] = True
        return True

    def apply(self, fact: RunState | RunFinished | TransportFailed) -> bool:
        """Counts any fact once (see the ``apply_*`` methods)."""
        if isinstance(fact, RunState):
            return self.apply_state(fact)
        if isinstance(fact, RunFinished):
            return self.apply_finished(fact)
        return self.apply_transport_error(fact)

    def apply_state(self, state: RunState) -> bool:
        """Counts a run's state once; False if it was seen already or is older than what is known."""
        if not self._first_time(state.state_id):
            return False
        newest = self._newest.get(state.run_id)
        if newest is not None and state.timestamp < newest:
            return False
        self._newest[state.run_id] = state.timestamp
        labels = (state.script, state.host)
        self.running.labels(*labels)  # shown from the first state on, so that it can be seen back at 0
        previous = self._running.pop(state.run_id, None)
        if previous is not None:
            self.running.labels(*previous).dec()
        if state.state_type == "RUNNING":
            self._running[state.run_id] = labels
            self.running.labels(*labels).inc()
        if state.state_type in TERMINAL and self._in_window(state.timestamp):
            self.runs.labels(*labels, state.state_type.lower()).inc()
            if state.duration_seconds is not None:
                self.duration.labels(*labels).observe(state.duration_seconds)
            if state.state_type == "COMPLETED":
                self.note_success(state.script, state.timestamp)
        return True

    def note_success(self, script: str, ended: datetime) -> None:
        """A run of ``script`` completed at ``ended``: the last success moves forward, never back."""
        stamp = ended.timestamp()
        if stamp > self._success_times.get(script, 0.0):
            self._success_times[script] = stamp
            self.last_success.labels(script).set(stamp)

    def apply_finished(self, finished: RunFinished) -> bool:
        """Counts a script's output lines once and keeps its newest exit code."""
        if not (self._in_window(finished.occurred) and self._first_time(finished.event_id)):
            return False
        for stream, count in finished.lines.items():
            if count > 0:
                self.output_lines.labels(finished.script, stream).inc(count)
        self.host_executions.labels(finished.script, finished.host, finished.outcome).inc()
        latest = self._exit_times.get(finished.script)
        if latest is None or finished.occurred >= latest:
            self._exit_times[finished.script] = finished.occurred
            self.last_exit_code.labels(finished.script).set(finished.exit_code)
        return True

    def apply_transport_error(self, failure: TransportFailed) -> bool:
        if not (self._in_window(failure.occurred) and self._first_time(failure.event_id)):
            return False
        self.transport_errors.labels(failure.host, failure.kind).inc()
        if failure.unreachable is not None:
            outcome = "unreachable" if failure.unreachable else "failed"
            self.host_executions.labels(failure.script, failure.host, outcome).inc()
        return True


class ServiceMetrics:
    """The host probe and the exporter's own health; these survive a rebuild."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.host_up = Gauge("sms_host_up", "1 if the periodic check found the host up (reachable, trusted key; usable with login checks), else 0.",
                             ["host"], registry=r)
        self.expected_interval = Gauge(
            "sms_script_expected_interval_seconds",
            "Shortest interval between two scheduled runs of the script (scheduled scripts only).",
            ["script"], registry=r)
        self.connected = Gauge("sms_exporter_connected", "1 while following the run events' source (Prefect's event stream or Kafka).", registry=r)
        self.reconnects = Counter("sms_exporter_reconnects", "Times the event stream was lost and re-subscribed.",
                                  registry=r)
        self.rebuilds = Counter("sms_exporter_rebuilds", "Times the run metrics were rebuilt from Prefect's API or replayed from Kafka.",
                                registry=r)
        self.lag = Gauge("sms_exporter_events_lag_seconds",
                         "Delay between the newest counted event happening and the exporter counting it.", registry=r)
        self.last_event = Gauge("sms_exporter_last_event_timestamp_seconds",
                                "When the newest counted event happened (Unix time).", registry=r)

        self._labels: dict[Gauge, set[str]] = {}

    def set_labelled(self, gauge: Gauge, values: Mapping[str, float]) -> None:
        """Sets one-label ``gauge`` to exactly ``values`` (label → value), dropping labels no longer there."""
        self.keep_only(gauge, values.keys())
        for label, value in values.items():
            self.set_one(gauge, label, value)

    def set_one(self, gauge: Gauge, label: str, value: float) -> None:
        """Sets one-label ``gauge``'s ``label`` to ``value``, the others unchanged."""
        gauge.labels(label).set(value)
        self._labels.setdefault(gauge, set()).add(label)

    def keep_only(self, gauge: Gauge, labels: Collection[str]) -> None:
        """Drops the labels of one-label ``gauge`` that are not in ``labels``."""
        shown = self._labels.setdefault(gauge, set())
        for label in shown - set(labels):
            gauge.remove(label)
            shown.discard(label)

    def labels_of(self, gauge: Gauge) -> set[str]:
        """The labels one-label ``gauge`` shows now."""
        return set(self._labels.get(gauge, ()))

    def counted(self, occurred: datetime, now: datetime) -> None:
        """An event was counted ``now``."""
        self.lag.set(max(0.0, (now - occurred).total_seconds()))
        self.last_event.set(occurred.timestamp())
