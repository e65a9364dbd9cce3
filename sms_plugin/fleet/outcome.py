"""What came of each host of a run, and of the whole run.

A host execution ends in one of these states: ``succeeded`` (exit code 0), ``failed`` (another exit
code), ``timed_out`` (killed at the script's timeout), ``unreachable`` (the transport could not be
opened: no connection, refused login, a host key that does not match), ``stopped`` (the run was
cancelled while the host ran) or ``skipped`` (never started: a failure limit was reached or the run
was stopped first). The run is Completed only when every host succeeded::

    outcomes = [HostOutcome("web-01", "succeeded", 0, 1.2), HostOutcome("web-02", "unreachable", message="...")]
    verdict("rotate-logs", outcomes)
    # 'rotate-logs failed on 1 of 2 hosts (1 unreachable): web-02'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sms_plugin.run_results import HostResult

HostState = Literal["succeeded", "failed", "timed_out", "unreachable", "stopped", "skipped"]
EXECUTION_STATES = ("pending", "running", "succeeded", "failed", "timed_out", "unreachable", "stopped", "skipped")
"""Every state of a host execution row: the outcomes' plus ``pending`` (not begun) and ``running``."""
FAILURES: frozenset[str] = frozenset({"failed", "timed_out", "unreachable"})
"""The outcomes a failure limit counts."""
_ORDER: tuple[HostState, ...] = ("failed", "timed_out", "unreachable", "stopped", "skipped")
NAMED_HOSTS = 20
"""At most this many hosts are named in the run's message; the others are counted."""


@dataclass(frozen=True)
class HostOutcome(HostResult):
    """One host's result once it has ended (``state`` is a :data:`HostState`): its exit code, seconds
    and, for a failure, why (the last stderr lines or the connection error)."""

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def counts_as_failure(self) -> bool:
        """Whether a failure limit counts this host."""
        return self.state in FAILURES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(script: str, outcomes: Sequence[HostOutcome]) -> str | None:
    """None when every host succeeded; otherwise the run's failure message, e.g.
    ``rotate-logs failed on 3 of 200 hosts (2 failed, 1 unreachable): web-07, web-11, db-02``.

    >>> verdict("x", [HostOutcome("a", "succeeded"), HostOutcome("b", "timed_out"), HostOutcome("c", "skipped")])
    'x failed on 2 of 3 hosts (1 timed out, 1 skipped): b, c'
    """
    bad = [outcome for outcome in outcomes if not outcome.succeeded]
    if not bad:
        return None
    counts = Counter(outcome.state for outcome in bad)
    parts = ", ".join(f"{counts[state]} {state.replace('_', ' ')}" for state in _ORDER if counts[state])
    names = ", ".join(outcome.host for outcome in bad[:NAMED_HOSTS])
    if len(bad) > NAMED_HOSTS:
        names += f" and {len(bad) - NAMED_HOSTS} more"
    return f"{script} failed on {len(bad)} of {len(outcomes)} hosts ({parts}): {names}"


def summary_rows(outcomes: Sequence[HostOutcome]) -> list[dict[str, Any]]:
    """The rows of the run's summary table: host, state, exit code, duration, last stderr."""
    return [
        {
            "host": outcome.host,
            "state": outcome.state,
            "exit code": "" if outcome.exit_code is None else outcome.exit_code,
            "duration": "" if outcome.seconds is None else f"{outcome.seconds:.1f} s",
            "last stderr": outcome.message,
        }
        for outcome in outcomes
    ]
