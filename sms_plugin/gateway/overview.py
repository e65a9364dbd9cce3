"""The monitoring overview: what every dashboard shows, loaded once from Prometheus and the catalog
(:func:`load_snapshot`, shared by all callers through the cache) and then cut per caller
(:func:`summarize`: only the scripts, runs and hosts the caller may read).

PromQL over SMS's metrics (docs/metrics.md), all evaluated at one instant:

- runs by state over time: ``increase(sms_script_runs_total[step])`` as a range query;
- runs and success rate per script: ``increase(sms_script_runs_total[window])``;
- p50/p95 durations: the buckets' ``increase(...[window])``, summed over the caller's readable hosts
  and interpolated like ``histogram_quantile`` does;
- in progress: ``sms_script_running``; failing now: ``sms_script_last_exit_code != 0``;
- host health: ``sms_host_up``'s newest sample and when Prometheus scraped it.

Series stay split by script and host until the caller's cut, so that a narrowed user's figures
count only runs they may read.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from sms_plugin.catalog import Catalog, repository
from sms_plugin.gateway.rbac import Target
from sms_plugin.gateway.target_book import TargetBook
from sms_plugin.telemetry.promql import PromQL

Window = Literal["1h", "6h", "24h", "7d"]
#: Each window's length and the step of its runs-by-state buckets (12 to 24 buckets).
WINDOWS: dict[str, tuple[int, int]] = {"1h": (3600, 300), "6h": (21600, 1800), "24h": (86400, 3600),
                                       "7d": (604800, 43200)}
RECENT_AUDIT = 20
UPSTREAM_DEADLINE_SECONDS = 10.0

Pair = tuple[str, str]
"""(script, host)"""


@dataclass
class Snapshot:
    """One load of the overview's inputs, for every script and host (never shown as is)."""

    window: str
    generated_at: datetime
    over_time: list[tuple[float, Pair, str, float]] = field(default_factory=list)
    """(bucket end, (script, host), state, runs ended in the bucket)"""
    ended: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """script → host → state → runs ended in the window"""
    buckets: dict[str, dict[str, dict[float, float]]] = field(default_factory=dict)
    """script → host → duration bucket's upper bound → runs that took at most that long"""
    running: dict[Pair, float] = field(default_factory=dict)
    last_exit: dict[str, float] = field(default_factory=dict)
    host_up: dict[str, tuple[bool, float]] = field(default_factory=dict)
    book: TargetBook = field(default_factory=lambda: TargetBook({}, {}))
    audit: list[dict[str, Any]] = field(default_factory=list)


async def load_snapshot(prometheus_url: str, catalog: Catalog, window: str, http: httpx.AsyncClient) -> Snapshot:
    """Everything the overview needs: 6 PromQL queries, the scripts, the hosts and the newest audit events."""
    seconds, step = WINDOWS[window]
    now = time.time()
    prom = PromQL(prometheus_url, http)
    runs, span = "sms_script_runs_total", f"[{seconds}s]"
    async with asyncio.timeout(UPSTREAM_DEADLINE_SECONDS):
        over_time, ended, buckets, running, last_exit, host_up = await asyncio.gather(
            prom.range(f"sum by (script, host, state) (increase({runs}[{step}s]))", now - seconds + step, now, step),
            prom.instant(f"sum by (script, host, state) (increase({runs}{span}))", now),
            prom.instant(f"sum by (script, host, le) (increase(sms_script_run_duration_seconds_bucket{span}))", now),
            prom.instant("sum by (script, host) (sms_script_running)", now),
            prom.instant("max by (script) (sms_script_last_exit_code)", now),
            prom.latest("sms_host_up", now),
        )
    snapshot = Snapshot(window, datetime.fromtimestamp(now, UTC))
    for series in over_time:
        pair = (series.labels.get("script", ""), series.labels.get("host", ""))
        snapshot.over_time += [(t, pair, series.labels.get("state", ""), v) for t, v in series.points]
    for sample in ended:
        script, host = _pair(sample.labels)
        snapshot.ended.setdefault(script, {}).setdefault(host, {})[sample.labels.get("state", "")] = sample.value
    for sample in buckets:
        script, host = _pair(sample.labels)
        snapshot.buckets.setdefault(script, {}).setdefault(host, {})[float(sample.labels["le"])] = sample.value
    snapshot.running = {_pair(sample.labels): sample.value for sample in running}
    snapshot.last_exit = {sample.labels.get("script", ""): sample.value for sample in last_exit}
    snapshot.host_up = {sample.labels.get("host", ""): (sample.value == 1, sample.at) for sample in host_up}
    snapshot.book = await TargetBook.read(catalog)
    snapshot.audit = [{"at": event.at.isoformat(), "actor": event.actor, "action": event.action,
                       "target": f"{event.object_type} {event.object_name}".strip()}
                      for event in await catalog.aio.run(repository.list_audit, limit=RECENT_AUDIT)]
    return snapshot


def _pair(labels: dict[str, str]) -> Pair:
    return labels.get("script", ""), labels.get("host", "")


Allows = Callable[[Target], bool]
"""May the caller read this target? (``rbac.decide`` with the caller and the rules.)"""


def summarize(snapshot: Snapshot, reads: Allows, *, sees_audit: bool) -> dict[str, Any]:
    """The overview ``reads`` allows: only readable scripts, runs (script on host) and hosts;
    the recent audit events only for those who may read the audit trail (admins)."""
    book = snapshot.book
    readable_pairs: dict[Pair, bool] = {}

    def readable(pair: Pair) -> bool:
        if pair not in readable_pairs:
            readable_pairs[pair] = reads(book.target(*pair))
        return readable_pairs[pair]

    by_time: dict[tuple[float, str], float] = defaultdict(float)
    for t, pair, state, value in snapshot.over_time:
        if readable(pair):
            by_time[(t, state)] += value
    scripts = [
        _script_row(script.name, snapshot, readable) for script in book.scripts.values()
        if reads(book.target(script.name, script.host))
    ]
    return {
        "window": snapshot.window,
        "generated_at": snapshot.generated_at.isoformat(),
        "runs_by_state": [
            {"t": datetime.fromtimestamp(t, UTC).isoformat(), "state": state, "count": round(value)}
            for (t, state), value in sorted(by_time.items()) if round(value) > 0
        ],
        "scripts": scripts,
        "in_progress": round(sum(value for pair, value in snapshot.running.items() if readable(pair))),
        "hosts": [
            {"host": host, "healthy": up, "checked_at": datetime.fromtimestamp(at, UTC).isoformat()}
            for host, (up, at) in sorted(snapshot.host_up.items()) if reads(book.target(None, host))
        ],
        "recent_audit": snapshot.audit if sees_audit else [],
    }


def _script_row(script: str, snapshot: Snapshot, readable: Callable[[Pair], bool]) -> dict[str, Any]:
    states: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    for host, counts in snapshot.ended.get(script, {}).items():
        if readable((script, host)):
            for state, value in counts.items():
                states[state] += value
    for host, bounds in snapshot.buckets.get(script, {}).items():
        if readable((script, host)):
            for le, value in bounds.items():
                buckets[le] += value
    runs = round(sum(states.values()))
    exit_code = snapshot.last_exit.get(script)
    return {
        "script": script,
        "runs": runs,
        "success_rate": round(states["completed"] / sum(states.values()), 4) if runs else None,
        "p50_seconds": quantile(0.5, buckets),
        "p95_seconds": quantile(0.95, buckets),
        "failing_now": exit_code is not None and exit_code != 0,
    }


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (upper bound → count), interpolated linearly
    within its bucket as PromQL's ``histogram_quantile`` does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return round(lower, 3)  # in the +Inf bucket: the highest finite bound, like PromQL
            return round(lower + (bound - lower) * (rank - below) / max(count - below, 1e-12), 3)
        lower, below = bound, count
    return round(lower, 3)
