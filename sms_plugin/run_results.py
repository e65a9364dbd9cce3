"""What SMS answers about a run, in every face (CLI, SDK, through the gateway or not): how it
ended (``RunResult``) and its log lines (``LogLine``). Plain values: no Prefect, no catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RunResult:
    """How a run ended, as Prefect and the catalog know it."""

    run_id: str
    state: str
    """Prefect's state type: COMPLETED, FAILED, CANCELLED, CRASHED..."""
    message: str
    exit_code: int | None
    output_tail: list[str]

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str
