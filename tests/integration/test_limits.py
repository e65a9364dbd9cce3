"""Concurrency: per-host limits (``host:<name>`` = the block's ``max_parallel_sessions``) and
single-instance scripts (``queue``/``reject``), against a real Prefect server, sms worker and
sshd. Overlap is measured on the SSH host itself: every run appends ``start``/``end`` lines with
its token and the host's clock to a shared file in /tmp."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from flows.run_script import run_script
from sms_plugin import hosts, limits, runs, scripts
from sms_plugin.catalog import Catalog, ScriptSpec, add_script
from sms_plugin.errors import Conflict
from tests.integration.conftest import block_of

pytestmark = pytest.mark.integration

#: Appends "start|end <token> <epoch seconds>" to the file named by $2, sleeping $3 s between.
STAMPED = (
    'echo "start $1 $(date +%s.%N)" >> "$2"\n'
    'sleep "$3"\n'
    'echo "end $1 $(date +%s.%N)" >> "$2"\n'
)
WORKER_TIMEOUT = 90


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def block(ssh_server: Any):
    return functools.partial(block_of, ssh_server)


@pytest.fixture
def stamps() -> Iterator[Path]:
    """A file in /tmp the scripts (user smstest) append to and this test reads."""
    path = Path("/tmp") / f"sms-limits-{uuid.uuid4().hex}.log"
    yield path
    path.unlink(missing_ok=True)


def _intervals(path: Path) -> dict[str, tuple[float, float]]:
    """token → (start, end) as the SSH host's clock saw it."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for line in path.read_text().splitlines():
        what, token, stamp = line.split()
        (starts if what == "start" else ends)[token] = float(stamp)
    assert starts.keys() == ends.keys(), path.read_text()
    return {token: (starts[token], ends[token]) for token in starts}


def _max_overlap(intervals: dict[str, tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals.values()] + [(e, -1) for _, e in intervals.values()])
    running = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


async def _limit(host: str):
    async with get_client() as client:
        return await client.read_global_concurrency_limit_by_name(limits.host_limit_name(host))


async def _messages(run_id: str, wanted: str, timeout: float = 15) -> list[str]:
    """The run's log messages once one contains ``wanted`` (the log API lags the state)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = [line.message async for line in runs.logs(run_id)]
        if any(wanted in m for m in messages) or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- an abandoned slot


@dataclass
class _Abandoned:
    host: str
    taken: float
    freed: float | None = None
    """When the slot was first seen free again (time.monotonic())."""
    stop: threading.Event = field(default_factory=threading.Event)


def _watch(api_url: str, slot: _Abandoned) -> None:
    """Polls the host's limit every second until its slot is free, the lease is long overdue, or the module ends."""
    url = f"{api_url}/v2/concurrency_limits/{limits.host_limit_name(slot.host)}"
    while time.monotonic() < slot.taken + limits.LEASE_SECONDS + 30:
        if httpx.get(url, timeout=10).raise_for_status().json()["active_slots"] == 0:
            slot.freed = time.monotonic()
            return
        if slot.stop.wait(1):
            return


@pytest.fixture(scope="module", autouse=True)
async def abandoned_slot(prefect_server, ssh_server) -> AsyncIterator[tuple[_Abandoned, threading.Thread]]:
    """What a SIGKILLed flow process leaves behind: a slot taken with SMS's lease that nobody renews,
    on a host of its own. Taken when the module starts and watched from a thread, so that the
    module's other tests count toward the lease's 60 s; the module's last test checks the outcome."""
    host = _unique("lim-lease")
    await hosts.add(host, block_of(ssh_server, max_parallel_sessions=1))
    async with get_client() as client:
        await client.increment_concurrency_slots_with_lease(
            names=[limits.host_limit_name(host)], slots=1, mode="concurrency", lease_duration=limits.LEASE_SECONDS
        )
    slot = _Abandoned(host, time.monotonic())
    assert (await _limit(host)).active_slots == 1
    watcher = threading.Thread(target=_watch, args=(prefect_server.api_url, slot), name="sms-lease-watch", daemon=True)
    watcher.start()
    yield slot, watcher
    slot.stop.set()
    watcher.join()


# --------------------------------------------------------------------------- per-host limits


async def test_host_limit_follows_the_host_block(catalog, prefect_server, block, stamps):
    name = _unique("lim")
    await hosts.add(name, block(max_parallel_sessions=2))
    assert (await _limit(name)).limit == 2
    await hosts.add(name, block(max_parallel_sessions=4), overwrite=True)
    assert (await _limit(name)).limit == 4

    # Edited behind SMS's back (as in the Prefect UI): the next run puts the limit right.
    await block(max_parallel_sessions=3).asave(name, overwrite=True)
    script = _unique("lim-one")
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=script, interpreter="sh", host=name), content=STAMPED, author="tests")
    state = await run_script(script=script, args=["one", str(stamps), "0"], return_state=True)
    assert state.is_completed(), state.message
    limit = await _limit(name)
    assert (limit.limit, limit.active, limit.active_slots) == (3, True, 0)  # and the slot is back

    async with limits.host_slot(name, 3) as waited:  # what the flow holds while the script runs
        assert (await _limit(name)).active_slots == 1
    print(f"slot on a free host granted in {waited * 1000:.0f} ms (limit read/upsert included)")
    assert (await _limit(name)).active_slots == 0


async def test_host_limit_of_two_never_lets_more_than_two_runs_on_the_host(catalog, prefect_server, block, stamps):
    name = _unique("lim")
    await hosts.add(name, block(max_parallel_sessions=2))
    script = _unique("lim-five")
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=script, interpreter="sh", host=name), content=STAMPED, author="tests")

    began = time.monotonic()
    states = await asyncio.gather(
        *(run_script(script=script, args=[f"run{i}", str(stamps), "4"], return_state=True) for i in range(5))
    )
    elapsed = time.monotonic() - began
    assert all(state.is_completed() for state in states), [s.message for s in states]

    intervals = _intervals(stamps)
    overlap = _max_overlap(intervals)
    print(f"5 runs, limit 2: {elapsed:.1f} s in all, max overlap on the host {overlap}")
    assert len(intervals) == 5
    assert overlap == 2  # 2 at once (so the in-process runs really are concurrent), never 3
    assert (await _limit(name)).active_slots == 0

    waited = 0
    for state in states:
        messages = await _messages(str(state.state_details.flow_run_id), "finished with exit code")
        waiting = [m for m in messages if m.startswith("waiting for a free slot")]
        got = [m for m in messages if m.startswith(f"got a slot on host {name} after ")]
        assert waiting in ([], [f"waiting for a free slot on host {name} (limit 2)"]), messages  # once
        assert len(got) == len(waiting), messages
        waited += bool(waiting)
    # How many had to wait depends on how far apart Prefect's in-process engine starts them.
    assert waited >= 1


# --------------------------------------------------------------------------- single-instance scripts


async def _deployed(catalog: Catalog, host: str, mode: str, content: str) -> str:
    name = _unique(f"single-{mode}")
    spec = ScriptSpec(name=name, interpreter="sh", host=host, single_instance=mode)
    await scripts.add(catalog, spec, content, author="tests")
    return name


async def _state_names(run_id: str) -> list[str]:
    async with get_client() as client:
        return [state.name for state in await client.read_flow_run_states(uuid.UUID(run_id))]


async def test_reject_refuses_a_second_run_with_a_clear_message(catalog, prefect_worker, block, stamps):
    host = _unique("lim")
    await hosts.add(host, block())
    name = await _deployed(catalog, host, "reject", STAMPED)
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"run-script/{name}")
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW

    first = await runs.start(catalog, name, args=["first", str(stamps), "6"], trigger="cli", user="tests")
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not stamps.exists() and time.monotonic() < deadline:  # running on the host
        await asyncio.sleep(0.2)

    # CLI/SDK: refused before anything is created.
    with pytest.raises(Conflict) as refused:
        await runs.start(catalog, name, args=["second", str(stamps), "0"], trigger="cli", user="tests")
    assert str(refused.value) == (
        f"script {name} allows one run at a time and run {first} is still Running; stop it or wait"
    )

    # The Prefect UI (or API): Prefect's deployment concurrency cancels the new run.
    async with get_client() as client:
        ui_run = await client.create_flow_run_from_deployment(deployment.id, parameters={"args": ["ui", str(stamps), "0"]})
    began = time.monotonic()
    ui = await runs.wait(catalog, str(ui_run.id), timeout=WORKER_TIMEOUT, poll=0.2)
    print(f"UI-created run refused in {time.monotonic() - began:.1f} s: {ui.state} {ui.message!r}")
    assert (ui.state, ui.message) == ("CANCELLED", limits.REJECTED_MESSAGE)

    first_result = await runs.wait(catalog, first, timeout=WORKER_TIMEOUT, poll=0.2)
    assert first_result.state == "COMPLETED", first_result
    assert list(_intervals(stamps)) == ["first"]  # nothing else ever ran
    async with get_client() as client:
        await limits.refuse_second_run(client, name, deployment.id)  # free again

    # Back to "off": the deployment loses its concurrency limit.
    spec = ScriptSpec.from_script(scripts.show(catalog, name)).model_copy(update={"single_instance": "off"})
    await scripts.update(catalog, spec, author="tests")
    async with get_client() as client:
        assert (await client.read_deployment(deployment.id)).global_concurrency_limit is None


async def test_queue_runs_the_second_start_after_the_first_ended(catalog, prefect_worker, block, stamps):
    host = _unique("lim")
    await hosts.add(host, block())
    name = await _deployed(catalog, host, "queue", STAMPED)

    first = await runs.start(catalog, name, args=["first", str(stamps), "3"], trigger="cli", user="tests")
    second = await runs.start(catalog, name, args=["second", str(stamps), "0"], trigger="cli", user="tests")
    results = [await runs.wait(catalog, run_id, timeout=WORKER_TIMEOUT, poll=0.2) for run_id in (first, second)]
    assert [r.state for r in results] == ["COMPLETED", "COMPLETED"], results

    # The worker may submit either one first; whichever ran second started after the other ended.
    earlier, later = sorted(_intervals(stamps).values())
    gap = later[0] - earlier[1]
    print(f"queue: the second run started {gap:.2f} s after the first ended")
    assert gap >= 0
    # Prefect held the second back (whichever of the two the worker happened to submit first).
    assert "AwaitingConcurrencySlot" in await _state_names(first) + await _state_names(second)


# --------------------------------------------------------------------------- last: the abandoned slot


async def test_a_crashed_holder_loses_its_slot_when_the_lease_expires(abandoned_slot):
    """Prefect's lease reaper gives the slot back within LEASE_SECONDS + its 15 s loop, not before."""
    slot, watcher = abandoned_slot
    await asyncio.to_thread(watcher.join)
    assert slot.freed is not None, f"the slot was still taken {limits.LEASE_SECONDS + 30:g} s after it was abandoned"
    freed_after = slot.freed - slot.taken
    print(f"abandoned slot freed after {freed_after:.0f} s")
    assert freed_after >= limits.LEASE_SECONDS - 1
    assert (await _limit(slot.host)).active_slots == 0
