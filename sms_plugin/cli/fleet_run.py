"""``sms run NAME --hosts SELECTOR``: a fleet run's policy from the command's options, and its
per-host progress while it runs: a live table on a terminal, one plain line per host that ends
when piped (docs/fleet.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sms_plugin.run_results import HostResult, RunResult

_STYLE = {"succeeded": "green", "running": "cyan", "pending": "dim", "skipped": "dim", "stopped": "yellow"}


def policy_of(
    *, parallel: int | None, batch: str | None, batch_pause: float | None, max_failures: str | None, fail_fast: bool,
    deadline: float | None = None,
) -> dict[str, Any] | None:
    """The fleet policy the options give (only those given; the flow has the defaults), or None."""
    given = {"parallel": parallel, "batch": batch, "batch_pause_seconds": batch_pause, "max_failures": max_failures,
             "fail_fast": fail_fast or None, "deadline_seconds": deadline}
    policy = {key: value for key, value in given.items() if value is not None}
    return policy or None


def host_line(host: HostResult) -> str:
    """``web-01  failed  exit 3  1.4 s  disk full``: one host's part, as one line."""
    parts = [host.host, host.state]
    if host.exit_code is not None:
        parts.append(f"exit {host.exit_code}")
    if host.seconds is not None:
        parts.append(f"{host.seconds:.1f} s")
    parts.extend(host.message.strip().splitlines()[-1:])
    return "  ".join(parts)


def summary(result: RunResult) -> str:
    """``FAILED: 2 of 3 host(s) succeeded (1 failed); <Prefect's message>``."""
    counts: dict[str, int] = {}
    for host in result.hosts:
        counts[host.state] = counts.get(host.state, 0) + 1
    others = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "succeeded")
    text = f"{result.state}: {counts.get('succeeded', 0)} of {len(result.hosts)} host(s) succeeded"
    text += f" ({others})" if others else ""
    return text + (f"; {result.message}" if result.message else "")


def hosts_table(result: RunResult) -> Table:
    """The run's hosts: state, exit code, seconds and the last message line of each."""
    table = Table("host", "state", "exit code", "seconds", "message", title=f"run {result.run_id}: {result.state}")
    for host in result.hosts:
        style = _STYLE.get(host.state, "red")
        table.add_row(host.host, f"[{style}]{host.state}[/]", "" if host.exit_code is None else str(host.exit_code),
                      "" if host.seconds is None else f"{host.seconds:.1f}", (host.message.strip().splitlines() or [""])[-1])
    return table


def follow(
    fetch: Callable[[], RunResult], out: Console, *, timeout: float | None, poll: float = 1.0
) -> RunResult:
    """Show a fleet run's hosts until the run has ended; returns its final result (TimeoutError after
    ``timeout`` seconds). On a terminal a live table; otherwise a line per host as it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    printed: set[str] = set()

    def step(live: Live | None) -> RunResult:
        result = fetch()
        if live is not None:
            live.update(hosts_table(result), refresh=True)
            return result
        for host in result.hosts:
            if host.ended and host.host not in printed:
                printed.add(host.host)
                out.print(host_line(host), markup=False, highlight=False, soft_wrap=True)
        return result

    def until_ended(live: Live | None) -> RunResult:
        while not (result := step(live)).ended:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("gave up waiting")
            time.sleep(poll)
        return result

    if out.is_terminal:
        with Live(console=out, auto_refresh=False) as live:
            return until_ended(live)
    return until_ended(None)
