"""The load of the HA drills and their invariants (tests/integration/test_ha_drills.py).

A load is ``count`` runs, short and long alternately, spread over several sshd hosts. Each run's
script appends its run id to a ledger file (so a run that ran twice shows up twice) and prints
three numbered lines. ``check_invariants`` waits until every run has ended and asserts what every
drill must keep: all runs terminal, none ran twice, nothing left on the hosts, every line of a
completed run in Prefect's run log exactly once.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun

from sms_plugin import runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec
from tests.integration.conftest import alive, until

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
LINES = 3
FIGURES: list[str] = []
"""What the drills measured this session, printed at its end (``tests/integration/conftest.py``)."""
SHORT_SECONDS, LONG_SECONDS = 1, 12


@dataclass
class Load:
    ids: list[str]
    marker: str
    ledger: Path

    def ran(self) -> Counter[str]:
        """How often each run's script started (from the ledger)."""
        return Counter(self.ledger.read_text().split()) if self.ledger.exists() else Counter()


def _script(ledger: Path, seconds: int, marker: str) -> str:
    lines = "".join(f'echo "ha-line $SMS_RUN_ID {k}"\n' for k in range(1, LINES + 1))
    return f'echo "$SMS_RUN_ID" >> {ledger}\n{lines}sleep {seconds}.{marker}\n'


async def start_load(
    catalog: Catalog, hosts: list[str], count: int, *, long_seconds: int = LONG_SECONDS,
    timeouts: Mapping[str, int] | None = None,
) -> Load:
    """Adds a short and a long script per host and starts ``count`` runs over them, 8 requests at a
    time; ``timeouts``: the run timeout of the scripts of some hosts (none otherwise)."""
    marker = str(uuid.uuid4().int % 10**6).rjust(6, "1")
    folder = Path(f"/tmp/sms-ha-{marker}")
    folder.mkdir(mode=0o777, exist_ok=True)
    os.chmod(folder, 0o777)  # the scripts run as the sshd hosts' user
    ledger = folder / "ledger"
    names = []
    for host in hosts:
        for seconds in (SHORT_SECONDS, long_seconds):
            name = f"ha-{marker}-{host}-{seconds}s"
            spec = ScriptSpec(name=name, interpreter="sh", host=host, kill_grace_seconds=1,
                              timeout_seconds=(timeouts or {}).get(host))
            await scripts.add(catalog, spec, _script(ledger, seconds, marker), author="tests")
            names.append(name)
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> str:
        async with gate:
            return await runs.start(catalog, names[n % len(names)], trigger="cli", user="tests")

    ids = list(await asyncio.gather(*(one(n) for n in range(count))))
    return Load(ids, marker, ledger)


async def flow_runs(ids: list[str]) -> dict[str, FlowRun]:
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids])), limit=len(ids)
        )
    return {str(run.id): run for run in found}


def state_of(run: FlowRun) -> str:
    return run.state.type.value if run.state else "NONE"


async def until_final(ids: list[str], timeout: float) -> dict[str, FlowRun]:
    async def all_final() -> dict[str, FlowRun] | None:
        current = await flow_runs(ids)
        return current if len(current) == len(ids) and all(state_of(r) in FINAL for r in current.values()) else None

    return await until(all_final, timeout, interval=1) or await flow_runs(ids)


async def lines_in_prefect(run_id: str) -> Counter[str]:
    """How often each output line of the load is in the run's log (a message may hold several
    consecutive lines of output, one a line)."""
    found: Counter[str] = Counter()
    async for entry in runs.logs(run_id):
        found.update(line for line in entry.message.splitlines() if line.startswith("ha-line "))
    return found


@dataclass
class Outcome:
    """What a drill measured (one row of the drills table in docs/deploy.md)."""

    in_flight: int
    states: Counter[str]
    lost: int
    duplicates: int
    orphans: int
    lines_lost: int
    lines_doubled: int


async def check_invariants(load: Load, ssh_server, *, timeout: float = 240) -> Outcome:
    """Waits for every run to end, then asserts the drill invariants; returns the measures."""
    final = await until_final(load.ids, timeout)
    states = Counter(state_of(final[i]) if i in final else "MISSING" for i in load.ids)
    lost = sum(n for state, n in states.items() if state not in FINAL)
    ran = load.ran()
    duplicates = sum(1 for n in ran.values() if n > 1)
    await until(lambda: not alive(ssh_server, load.marker), 30)
    orphans = len(alive(ssh_server, load.marker))
    lines_lost = lines_doubled = 0
    for run_id in (i for i in load.ids if i in final and state_of(final[i]) == "COMPLETED"):
        seen = await lines_in_prefect(run_id)
        expected = {f"ha-line {run_id} {k}" for k in range(1, LINES + 1)}
        lines_lost += len(expected - set(seen))
        lines_doubled += sum(1 for line in expected if seen[line] > 1)
    outcome = Outcome(len(load.ids), states, lost, duplicates, orphans, lines_lost, lines_doubled)
    report(f"drill outcome: {outcome}")
    for run_id, run in final.items():
        if state_of(run) in ("FAILED", "CRASHED"):
            report(f"  {state_of(run).lower()} run {run_id}: {run.state.message if run.state else ''}")
    assert lost == 0, f"runs not terminal: {states}"
    assert duplicates == 0, f"runs that ran twice: {[i for i, n in ran.items() if n > 1]}"
    assert orphans == 0, alive(ssh_server, load.marker)
    completed = [i for i in load.ids if state_of(final[i]) == "COMPLETED"]
    assert all(ran[i] == 1 for i in completed), "a completed run whose script never started"
    assert (lines_lost, lines_doubled) == (0, 0), f"lines lost {lines_lost}, doubled {lines_doubled}"
    return outcome


def report(line: str) -> None:
    """Prints a drill's figure and keeps it for the session's summary, where it is seen even
    when pytest captures the drill's output."""
    print(line)
    FIGURES.append(line)
