"""What SMS answers about a run, in every face (CLI, SDK, through the gateway or not): how it
ended (``RunResult``), its log lines (``LogLine``), a listing's row (``RunSummary``). Plain
values: no Prefect, and the catalog only as a type."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sms_plugin.catalog.models import RunRecord


#: The logger of the script's output records in Prefect's run log (stdout at INFO, stderr at
#: WARNING); SMS's own messages about a run come from other loggers.
OUTPUT_LOGGER = "prefect.task_runs.output"
#: Prefect's final state types.
FINAL_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
#: Host states that will not change any more (the others: pending, running).
FINAL_HOST_STATES = frozenset({"succeeded", "failed", "timed_out", "unreachable", "stopped", "skipped"})


@dataclass(frozen=True)
class HostResult:
    """One host's part of a run, now: ``state`` is ``pending``, ``running`` or how it ended
    (``succeeded``, ``failed``, ``timed_out``, ``unreachable``, ``stopped``, ``skipped``)."""

    host: str
    state: str
    exit_code: int | None = None
    seconds: float | None = None
    message: str = ""

    @property
    def ended(self) -> bool:
        return self.state in FINAL_HOST_STATES


@dataclass(frozen=True)
class RunResult:
    """How a run ended, as Prefect and the catalog know it."""

    run_id: str
    state: str
    """Prefect's state type: COMPLETED, FAILED, CANCELLED, CRASHED..."""
    message: str
    exit_code: int | None
    output_tail: list[str]
    hosts: tuple[HostResult, ...] = ()
    """Per host, in name order (a fleet run; a single-host run has at most one)."""

    @property
    def ended(self) -> bool:
        """The run is in a final state (it may still be retried by Prefect's rules)."""
        return self.state in FINAL_RUN_STATES

    @property
    def ok(self) -> bool:
        """Completed, and every host (if any is known) succeeded."""
        return self.state == "COMPLETED" and all(host.state == "succeeded" for host in self.hosts)


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str
    host: str | None = None
    """The host that printed the line, when the log source records it (Elasticsearch does)."""
    stream: str | None = None
    """``stdout`` or ``stderr`` for the script's output (its lines joined by newlines); None for SMS's
    own messages about the run."""


@dataclass(frozen=True)
class RunSummary:
    """One run in a listing (``sms run list``, ``GET /api/v1/runs``): what the catalog recorded."""

    run_id: str
    script: str
    version: int | None
    host: str
    trigger: str
    requested_by: str
    exit_code: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, record: RunRecord) -> RunSummary:
        """The summary of a catalog run record."""
        return cls(record.flow_run_id, record.script_name, record.version_number, record.host, record.trigger,
                   record.requested_by, record.exit_code, record.created_at, record.started_at, record.ended_at)
