"""Fleet runs against the test bed's real sshd: one flow run, many host blocks, one task run per host.

Every host block here points at the same sshd (a good one, a closed port, or a wrong pinned host
key); a host execution is marked ``<host>.<run id>``, so the script tells which host it runs as from
``$SMS_RUN_ID`` and hosts named ``...-fail-...`` fail on purpose. The in-process flow is used for the
outcomes, batches and limits; the stop goes through the real sms worker, as the Prefect UI's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from typing import Any
from uuid import UUID

import paramiko
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.states import State

from flows.run_script import run_script
from infra.testbed.ports import free_port
from sms_plugin import hosts, runs, scripts
from sms_plugin.deploy import deployment_name
from sms_plugin.catalog import Catalog, HostExecutionRecord, ScriptSpec, add_script, get_run, host_executions
from tests.integration.conftest import alive, block_of, until
from tests.load import FULL_LOAD, scaled

pytestmark = pytest.mark.integration

#: Fails with exit code 3 (and a stderr line) on hosts named ``...-fail-...``.
MIXED = 'case "$SMS_RUN_ID" in *-fail-*) echo "disk full on ${SMS_RUN_ID%%.*}" >&2; exit 3;; esac\necho "ok"\n'
#: Prints the host's clock when it starts and ends (seconds since the epoch), half a second apart.
CLOCKED = 'echo "start $(date +%s.%N)"\nsleep 0.5\necho "end $(date +%s.%N)"\n'


def _token() -> str:
    return uuid.uuid4().hex[:8]


def _wrong_host_key() -> str:
    key = paramiko.ECDSAKey.generate()
    return f"{key.get_name()} {key.get_base64()}"


async def _add_hosts(ssh_server: Any, names: list[str], **overrides: object) -> None:
    """Host blocks ``names`` for the test bed's sshd, 20 at a time."""
    block = block_of(ssh_server, **overrides)
    for start in range(0, len(names), 20):
        await asyncio.gather(*(hosts.add(name, block) for name in names[start : start + 20]))


def _script(catalog: Catalog, content: str, **spec: Any) -> str:
    name = f"fleet-{_token()}"
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="sh", host="local", **spec), content=content, author="tests")
    return name


def _rows(catalog: Catalog, run_id: str) -> list[HostExecutionRecord]:
    with catalog.session() as session:
        rows = host_executions(session, run_id)
        session.expunge_all()
        return rows


def _run_id(state: State) -> str:
    assert state.state_details.flow_run_id is not None
    return str(state.state_details.flow_run_id)


class Fleet:
    """Host names of one test: ``<token>-<kind>-<n>``."""

    def __init__(self) -> None:
        self.token = _token()

    def names(self, kind: str, count: int) -> list[str]:
        return [f"t{self.token}-{kind}-{i:03d}" for i in range(count)]


@pytest.fixture(scope="module")
async def pool(prefect_server: Any, ssh_server: Any) -> dict[str, list[str]]:
    """The host blocks the tests of this module share (creating a block costs several API calls):
    8 good, 3 failing, 1 closed port, 1 wrong host key. Each run marks its executions with the run's
    id, so runs never see each other's leftovers."""
    return await _mixed_fleet(ssh_server, 8, 3, 1, 1)


async def _mixed_fleet(ssh_server: Any, good: int, failing: int, down: int, wrong_key: int) -> dict[str, list[str]]:
    fleet = Fleet()
    groups = {"ok": fleet.names("ok", good), "fail": fleet.names("fail", failing),
              "down": fleet.names("down", down), "badkey": fleet.names("badkey", wrong_key)}
    await _add_hosts(ssh_server, groups["ok"] + groups["fail"])
    await asyncio.gather(*(hosts.add(name, block_of(ssh_server, port=free_port(), connect_timeout=3))
                           for name in groups["down"]))  # each its own closed port
    await _add_hosts(ssh_server, groups["badkey"], host_keys=[_wrong_host_key()])
    return groups


def _interleaved(groups: dict[str, list[str]]) -> list[str]:
    """The hosts in an order that mixes the kinds (the run keeps the order it is given)."""
    ordered: list[str] = []
    for row in zip(*(names + [""] * (max(map(len, groups.values())) - len(names)) for names in groups.values()), strict=True):
        ordered.extend(name for name in row if name)
    return ordered


async def _check_mixed_run(catalog: Catalog, groups: dict[str, list[str]], parallel: int) -> tuple[float, str]:
    sizes = tuple(len(groups[kind]) for kind in ("ok", "fail", "down", "badkey"))
    order = _interleaved(groups)
    name = _script(catalog, MIXED)
    started = time.monotonic()
    state = await run_script(script=name, hosts=order, policy={"parallel": parallel}, return_state=True)
    elapsed = time.monotonic() - started
    run_id = _run_id(state)

    bad = [host for host in order if "-ok-" not in host]
    assert state.is_failed()
    expected = (f"{name} failed on {len(bad)} of {len(order)} hosts ({sizes[1]} failed, {sizes[2] + sizes[3]} unreachable): "
                + ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else ""))
    assert state.message == expected
    result = await state.result(raise_on_failure=False)
    assert [entry["host"] for entry in result["hosts"]] == order

    rows = {row.host: row for row in _rows(catalog, run_id)}
    assert list(rows) == order  # one row per host, in the run's order
    for host in groups["ok"]:
        row = rows[host]
        assert (row.state, row.exit_code, row.message, row.output_tail) == ("succeeded", 0, "", "stdout: ok"), host
        assert row.remote_pid and row.started_at and row.ended_at and row.started_at <= row.ended_at
    for host in groups["fail"]:
        row = rows[host]
        assert (row.state, row.exit_code) == ("failed", 3)
        assert row.message == f"{name} failed with exit code 3; last stderr: disk full on {host}"
    for host in groups["down"]:
        row = rows[host]
        assert (row.state, row.exit_code, row.remote_pid) == ("unreachable", None, None)
        assert re.match(rf"{name} could not run on {host}: cannot connect to smstest@127\.0\.0\.1:\d+", row.message), row.message
    for host in groups["badkey"]:
        row = rows[host]
        assert (row.state, row.exit_code, row.remote_pid) == ("unreachable", None, None)
        assert re.match(rf"{name} could not run on {host}: host key of 127\.0\.0\.1:\d+ has CHANGED", row.message), row.message
    with catalog.session() as session:
        record = get_run(session, run_id)
        assert (record.host, record.exit_code) == (f"{len(order)} hosts", None) and record.ended_at is not None
    return elapsed, run_id


@pytest.fixture(scope="module")
async def mixed(pool: dict[str, list[str]], ssh_server: Any) -> dict[str, list[str]]:
    """The mixed-outcome test's fleet: the module's 13 hosts, or 200 with ``SMS_FULL_LOAD=1`` (170 good,
    15 failing, 10 closed ports, 5 wrong host keys; docs/testing.md#full-load)."""
    return await _mixed_fleet(ssh_server, 170, 15, 10, 5) if FULL_LOAD else pool


async def test_mixed_outcomes_give_exactly_the_right_result_per_host(catalog, mixed, monkeypatch):
    monkeypatch.setenv("SMS_FLEET_TASK_RUNS", "0")  # the path of large fleets: no task run per host
    elapsed, run_id = await _check_mixed_run(catalog, mixed, parallel=scaled(10, 50))
    print(f"{sum(map(len, mixed.values()))}-host mixed fleet run: {elapsed:.2f} s")
    async with get_client() as client:
        assert not await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])))
    failing = mixed["fail"][0]
    lines = [line async for line in runs.logs(run_id, host=failing)]
    output = [line.message for line in lines if line.stream is not None]
    assert output == [f"disk full on {failing}"], lines  # that host's own bytes only, without the fleet prefix
    assert all(line.message.startswith(f"[{failing}] ") for line in lines if line.stream is None), lines  # SMS's


async def test_each_host_is_a_task_run_and_the_run_has_a_summary_table(catalog, pool):
    good, failing = pool["ok"][:3], pool["fail"][:1]
    name = _script(catalog, MIXED)
    state = await run_script(script=name, hosts=good + failing, return_state=True)
    run_id = _run_id(state)

    async with get_client() as client:
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])))
        [artifact] = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"fleet-{run_id}"])))
    assert sorted((t.name, t.state.type.value) for t in task_runs) == sorted(
        [(host, "COMPLETED") for host in good] + [(host, "FAILED") for host in failing])
    assert artifact.type == "table"
    table = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert [(row["host"], row["state"], row["exit code"]) for row in table] == [
        *((host, "succeeded", 0) for host in good), (failing[0], "failed", 3)]
    assert table[-1]["last stderr"] == f"{name} failed with exit code 3; last stderr: disk full on {failing[0]}"
    assert all(row["duration"].endswith(" s") for row in table)


async def test_rolling_batches_run_in_order_by_the_hosts_clock(catalog, pool):
    names = pool["ok"][:5]
    name = _script(catalog, CLOCKED)
    state = await run_script(script=name, hosts=names,
                             policy={"batch": "2", "batch_pause_seconds": 1, "parallel": 10}, return_state=True)
    assert state.is_completed(), state.message
    rows = {row.host: row for row in _rows(catalog, _run_id(state))}
    clock = {host: dict(line.removeprefix("stdout: ").split() for line in rows[host].output_tail.splitlines())
             for host in names}
    batches = [names[0:2], names[2:4], names[4:5]]
    for previous, following in zip(batches, batches[1:], strict=False):
        ended = max(float(clock[host]["end"]) for host in previous)
        began = min(float(clock[host]["start"]) for host in following)
        assert began - ended >= 1.0, (previous, following, clock)  # after the whole batch, and the pause


async def test_a_failure_limit_stops_starting_hosts(catalog, pool):
    order = pool["fail"][:3] + pool["ok"][:3]
    name = _script(catalog, MIXED)
    state = await run_script(script=name, hosts=order, policy={"parallel": 1, "max_failures": "2"}, return_state=True)
    assert state.message == f"{name} failed on 6 of 6 hosts (3 failed, 3 skipped): " + ", ".join(order)
    rows = _rows(catalog, _run_id(state))
    assert [row.state for row in rows] == ["failed"] * 3 + ["skipped"] * 3
    for row in rows[3:]:  # never started: nothing ran there
        assert (row.remote_pid, row.started_at, row.exit_code, row.output_tail) == (None, None, None, "")
        assert row.message == "not started: more than 2 host(s) failed"


async def test_the_deadline_stops_the_running_hosts_and_skips_the_rest(catalog, pool, ssh_server):
    names = pool["ok"][:4]
    marker = f"{uuid.uuid4().int % 10**6 + 3 * 10**6}"
    name = _script(catalog, f"echo started\nsleep {marker}\n")
    began = time.monotonic()
    state = await run_script(script=name, hosts=names, policy={"parallel": 2, "deadline_seconds": 12}, return_state=True)
    assert time.monotonic() - began < 60
    assert not alive(ssh_server, f"sleep {marker}")  # nothing of the run is left on the host
    assert state.message == f"{name} failed on 4 of 4 hosts (2 stopped, 2 skipped): " + ", ".join(names)
    rows = _rows(catalog, _run_id(state))
    assert [row.state for row in rows] == ["stopped"] * 2 + ["skipped"] * 2
    for row in rows[:2]:  # killed; on a machine under heavy load the deadline may come before the script started
        assert row.message in (f"stopped: process group {row.remote_pid} killed on {row.host}",
                               f"stopped before the script started on {row.host}"), row.message
    assert all(row.message == "not started: the run's deadline (12 s) passed" for row in rows[2:])


async def test_host_and_hosts_together_are_refused(catalog, pool):
    names = pool["ok"][:1]
    name = _script(catalog, MIXED)
    refusals = {
        "give either host (one host) or hosts (a fleet run), not both": {"host": names[0], "hosts": names},
        "unknown host(s): no-such-host-x": {"hosts": [*names, "no-such-host-x"]},
        "the hosts list names " + names[0] + " more than once": {"hosts": names * 2},
        "parallel must be a whole number of hosts from 1 to 5000, not 0": {"hosts": names, "policy": {"parallel": 0}},
    }
    for reason, parameters in refusals.items():
        state = await run_script(script=name, **parameters, return_state=True)
        assert state.is_failed() and state.message == f"{name} refused its inputs, nothing ran: {reason}"
        assert not _rows(catalog, _run_id(state))  # nothing was recorded, nothing ran


async def test_a_script_with_targets_runs_on_the_hosts_its_selector_picks(catalog, pool, ssh_server):
    fleet = Fleet()
    picked = fleet.names("ok", 2)  # the module's pool does not carry this label
    await _add_hosts(ssh_server, picked, labels=[f"fleet={fleet.token}"])
    name = f"fleet-{_token()}"
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="sh", targets=f"fleet={fleet.token}"), content=MIXED,
                   author="tests")
    state = await run_script(script=name, return_state=True)
    assert state.is_completed(), state.message
    assert [row.host for row in _rows(catalog, _run_id(state))] == picked


async def test_stopping_a_fleet_run_leaves_no_process_on_any_host(catalog, ssh_server, pool, prefect_worker):
    names = pool["ok"][:8]
    marker = f"{uuid.uuid4().int % 10**6 + 2 * 10**6}"
    pattern = f"sleep {marker}"
    name = f"fleet-{_token()}"
    content = f"sleep {marker} &\nsetsid sleep {marker} &\necho started\nsleep {marker}\n"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=names[0]), content, author="tests")
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(name))
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"script": name, "hosts": names, "policy": {"parallel": 4}})
    run_id = str(flow_run.id)
    try:
        # 4 hosts at a time, each with three sleeps: wait until all four run
        assert await until(lambda: len(alive(ssh_server, pattern)) >= 12, 90), alive(ssh_server, pattern)
        requested = time.monotonic()
        await runs.stop(run_id)
        assert await until(lambda: not alive(ssh_server, pattern), 15, interval=0.1), alive(ssh_server, pattern)
        gone_after = time.monotonic() - requested
        print(f"fleet stop: processes gone after {gone_after:.2f} s")

        def ended() -> list[HostExecutionRecord] | None:
            rows = _rows(catalog, run_id)
            return rows if all(row.state in ("stopped", "skipped") for row in rows) else None

        # The flow records every host before its process ends (Prefect's runner then takes ~30 s
        # more to call the run Cancelled; test_run_script_flow.py waits for that on one host).
        rows = await until(ended, 30) or _rows(catalog, run_id)
        async with get_client() as client:
            state = (await client.read_flow_run(UUID(run_id))).state
        assert state is not None and state.name in ("Cancelling", "Cancelled"), state
        await asyncio.sleep(2)  # nothing new starts after the stop
        assert not alive(ssh_server, pattern)

        def run_ended() -> bool:
            with catalog.session() as session:
                return get_run(session, run_id).ended_at is not None

        assert await until(run_ended, 10)
        assert sorted(row.state for row in rows) == ["skipped"] * 4 + ["stopped"] * 4, [(r.host, r.state) for r in rows]
        for row in rows:
            if row.state == "skipped":
                assert row.remote_pid is None and row.message == "not started: the run was stopped"
            else:
                assert row.remote_pid and row.message == f"stopped: process group {row.remote_pid} killed on {row.host}"
    finally:
        for line in alive(ssh_server, pattern):
            os.kill(int(line.split()[0]), 9)
