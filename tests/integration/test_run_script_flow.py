"""The ``run-script`` flow against real peers: Prefect server and sms worker, OpenSSH, the catalog.

Three ways in, cheapest first:

- the flow called in this process (``await run_script(...)``, ~1 s a run): exit codes, the run
  record, logs, timeouts, connection failures, retries;
- the deployments SMS keeps in Prefect (``sms_plugin.scripts``);
- the real sms worker (SMS's default, runs in its own process): a run started as the Prefect UI
  does, ``runs.start``, and cancellation, which must leave no process of the script on the SSH host.

The catalog is the SQLite file under the session's SMS_HOME, which the worker inherits.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling, State

from blocks.hosts import SSHHost
from flows.run_script import run_script
from infra.testbed.ports import free_port
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, RunRecord, ScheduleSpec, ScriptSpec, add_script, get_run, remove_script
from sms_plugin.errors import NotFound
from tests.integration.conftest import block_of

pytestmark = pytest.mark.integration

T = TypeVar("T")

SHELLS = ["bash", "sh", "ksh"]
#: Prints where it was uploaded to (stdout) and a line to stderr, then exits with its first argument.
EXIT_WITH = {shell: 'echo "out $0"\necho "err line" >&2\nexit "$1"\n' for shell in SHELLS} | {
    "python3": "import sys\nprint('out ' + sys.argv[0])\nprint('err line', file=sys.stderr)\n"
    "sys.exit(int(sys.argv[1]))\n"
}
#: A run in the worker costs seconds; give the worker generous room before calling it a hang.
WORKER_TIMEOUT = 90


# --------------------------------------------------------------------------- helpers


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _marker() -> str:
    """A unique sleep duration: ``sleep <marker>`` identifies a test's processes in the process table."""
    return f"{uuid.uuid4().int % 10**6 + 10**6}"


def _alive(ssh_server: Any, marker: str) -> list[str]:
    """Processes of smstest whose command line has ``marker``, zombies ignored."""
    return [line for line in ssh_server.processes(marker) if " Z" not in line]


async def _eventually(check: Callable[[], Awaitable[T] | T], timeout: float, interval: float = 0.2) -> T:
    """The first truthy value of ``check()`` within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() >= deadline:
            return value  # type: ignore[return-value]
        await asyncio.sleep(interval)


def _record(catalog: Catalog, run_id: str) -> RunRecord:
    with catalog.session() as session:
        return get_run(session, run_id)


def _run_id(state: State) -> str:
    assert state.state_details.flow_run_id is not None
    return str(state.state_details.flow_run_id)


async def _log_lines(run_id: str) -> list[tuple[str, str]]:
    return [(line.level, line.message) async for line in runs.logs(run_id)]


async def _logs_containing(run_id: str, *wanted: tuple[str, str], timeout: float = 15) -> list[tuple[str, str]]:
    """The run's (level, message) log lines once all of ``wanted`` are there (the log API lags the state)."""

    async def check() -> list[tuple[str, str]] | None:
        lines = await _log_lines(run_id)
        return lines if all(w in lines for w in wanted) else None

    return await _eventually(check, timeout, interval=0.5) or await _log_lines(run_id)


def _new_script(catalog: Catalog, host: str, interpreter: str, content: str, **spec: Any) -> str:
    """Adds a script to the catalog only (no deployment: enough for in-process runs); returns its name."""
    name = _unique(f"flow-{interpreter}")
    with catalog.session() as session:
        spec_ = ScriptSpec(name=name, interpreter=interpreter, host=host, **spec)
        add_script(session, spec_, content=content, author="tests")
    return name


async def _final(catalog: Catalog, run_id: str, timeout: float = WORKER_TIMEOUT) -> runs.RunResult:
    return await runs.wait(catalog, run_id, timeout=timeout, poll=0.2)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def ssh_block(ssh_server: Any) -> Callable[..., SSHHost]:
    """An SSHHost block for the test bed's sshd (key login, host keys pinned); keywords override."""

    return functools.partial(block_of, ssh_server)


@pytest.fixture
async def ssh_host(prefect_server: Any, ssh_block: Callable[..., SSHHost]) -> str:
    """The name of a fresh, working SSH host block."""
    name = _unique("ssh")
    await hosts.add(name, ssh_block())
    return name


@pytest.fixture
def smstest_scratch() -> Path:
    """Where the SSH transport uploads scripts: ``~smstest/.sms/run``."""
    return Path(pwd.getpwnam("smstest").pw_dir) / ".sms" / "run"


@pytest.fixture
async def worker_client(prefect_worker: Any) -> AsyncIterator[Any]:
    async with get_client() as client:
        yield client


# --------------------------------------------------------------------------- 1. the flow, in process


@pytest.mark.parametrize("interpreter", [*SHELLS, "python3"])
@pytest.mark.parametrize("code", [0, 1, 42])
async def test_exit_code_maps_to_state_record_logs_and_cleanup(
    catalog, ssh_host, smstest_scratch, interpreter, code
):
    name = _new_script(catalog, ssh_host, interpreter, EXIT_WITH[interpreter])
    started = time.monotonic()
    state = await run_script(script=name, args=[str(code)], return_state=True)
    elapsed = time.monotonic() - started
    print(f"in-process run of {interpreter} exit {code}: {elapsed:.2f} s")
    run_id = _run_id(state)

    if code == 0:
        assert state.is_completed(), state.message
    else:
        assert state.is_failed()
        assert state.message == f"{name} failed with exit code {code}; last stderr: err line"

    record = _record(catalog, run_id)
    assert (record.script_name, record.exit_code, record.host) == (name, code, ssh_host)
    assert (record.version_number, record.trigger) == (1, "prefect")
    assert record.remote_pid is not None and record.remote_pid > 1
    assert record.started_at is not None and record.ended_at is not None
    assert record.created_at <= record.started_at <= record.ended_at
    tail = record.output_tail.splitlines()
    assert "stderr: err line" in tail
    [uploaded] = [line.removeprefix("stdout: out ") for line in tail if line.startswith("stdout: ")]
    # The script ran from its run's upload folder ~smstest/.sms/run/<run id>, which is gone now.
    assert Path(uploaded).parent == smstest_scratch / run_id
    assert Path(uploaded).stem == name
    assert not Path(uploaded).parent.exists()

    lines = await _logs_containing(run_id, ("INFO", f"out {uploaded}"), ("WARNING", "err line"))
    assert ("INFO", f"out {uploaded}") in lines
    assert ("WARNING", "err line") in lines
    assert ("INFO", f"Started as process group {record.remote_pid}") in lines
    if code:
        assert ("ERROR", state.message) in lines


async def test_timeout_fails_the_run_and_kills_the_whole_process_group(catalog, ssh_host, ssh_server):
    marker = _marker()
    # backgrounded, daemonised (setsid, double fork) and TERM-ignoring children
    content = (
        f"sleep {marker} &\n(sleep {marker}; true) &\nsetsid sleep {marker} &\n"
        f"(setsid sh -c 'trap \"\" TERM; sleep {marker}' &)\necho started\nsleep {marker}\n"
    )
    name = _new_script(catalog, ssh_host, "bash", content, timeout_seconds=2)
    started = time.monotonic()
    state = await asyncio.wait_for(run_script(script=name, return_state=True), 30)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    assert state.message.startswith(f"{name} timed out after 2 s; its remote process group was killed (exit code ")
    assert 2 <= elapsed < 2 + 5 + 5, elapsed  # timeout + TERM grace + slack
    record = _record(catalog, _run_id(state))
    assert record.exit_code not in (None, 0)
    assert record.output_tail.splitlines() == ["stdout: started"]
    pattern = f"sleep {marker}"
    assert await _eventually(lambda: not _alive(ssh_server, pattern), 5), _alive(ssh_server, pattern)


CONNECTION_PROBLEMS = {
    "unreachable": ({"port": "free"}, r"could not run on {host}: cannot connect to smstest@127\.0\.0\.1:\d+"),
    "bad-password": (
        {"private_key": None, "password": "wrong"},
        r"could not run on {host}: smstest@127\.0\.0\.1:\d+ refused the credentials",
    ),
    "unknown-host-key": (
        {"host_keys": []},
        r"could not run on {host}: host key of 127\.0\.0\.1:\d+ is not trusted \(ssh-\S+ SHA256:",
    ),
}


@pytest.mark.parametrize("problem", list(CONNECTION_PROBLEMS))
async def test_connection_problems_fail_quickly_and_clearly(catalog, prefect_server, ssh_block, problem):
    overrides, pattern = CONNECTION_PROBLEMS[problem]
    overrides = {k: (free_port() if v == "free" else v) for k, v in overrides.items()}
    host = _unique(f"bad-{problem}")
    await hosts.add(host, ssh_block(**overrides))
    name = _new_script(catalog, host, "sh", "echo never\n")

    started = time.monotonic()
    state = await asyncio.wait_for(run_script(script=name, return_state=True), 30)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    assert re.match(f"{re.escape(name)} {pattern.format(host=re.escape(host))}", state.message), state.message
    assert elapsed < 15, elapsed
    record = _record(catalog, _run_id(state))
    assert (record.host, record.exit_code, record.remote_pid) == (host, None, None)
    assert record.ended_at is not None


async def test_script_retries_until_it_succeeds(catalog, ssh_host):
    flag = Path(f"/tmp/sms-retry-{uuid.uuid4().hex}")
    content = f'if [ -e {flag} ]; then echo "second try"; exit 0; fi\ntouch {flag}\necho "first try" >&2\nexit 7\n'
    name = _new_script(catalog, ssh_host, "sh", content, retries=1, retry_delay_seconds=0)
    try:
        state = await asyncio.wait_for(run_script(script=name, return_state=True), 60)
        assert flag.exists() and flag.stat().st_uid == pwd.getpwnam("smstest").pw_uid  # made by the first try
    finally:
        flag.unlink(missing_ok=True)

    assert state.is_completed(), state.message
    async with get_client() as client:
        flow_run = await client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.run_count == 2
    assert flow_run.empirical_policy.retries == 1
    record = _record(catalog, _run_id(state))
    assert (record.exit_code, record.output_tail) == (0, "stdout: second try")
    lines = await _logs_containing(_run_id(state), ("WARNING", "first try"), ("INFO", "second try"))
    assert ("WARNING", "first try") in lines and ("INFO", "second try") in lines


# --------------------------------------------------------------------------- 2. deployments


async def _deployment(client: Any, name: str) -> Any:
    return await client.read_deployment_by_name(f"run-script/{name}")


async def test_script_deployment_follows_add_update_and_remove(catalog, ssh_host):
    name = _unique("deployed")
    spec = ScriptSpec(
        name=name,
        interpreter="bash",
        host=ssh_host,
        schedules=[ScheduleSpec(cron="15 3 * * 1-5", timezone="Europe/Zurich")],
        tags=["nightly"],
    )
    await scripts.add(catalog, spec, "echo hi\n", author="tests")
    async with get_client() as client:
        deployment = await _deployment(client, name)
        assert deployment.work_pool_name == "sms"
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [
            ("15 3 * * 1-5", "Europe/Zurich", True)
        ]
        assert {f"host:{ssh_host}", "nightly"} <= set(deployment.tags)
        assert deployment.parameters == {"script": name}
        assert deployment.entrypoint == "flows.run_script.run_script"
        assert not deployment.pull_steps
        assert deployment.paused is False

        await scripts.update(catalog, spec.model_copy(update={"enabled": False}), author="tests")
        paused = await _deployment(client, name)
        assert paused.id == deployment.id
        assert paused.paused is True

        await scripts.remove(catalog, name, author="tests")
        with pytest.raises(ObjectNotFound):
            await _deployment(client, name)


async def test_sync_recreates_a_deleted_deployment_and_removes_orphans_page_after_page(ssh_host, tmp_path, monkeypatch):
    """On a catalog and a work pool of its own, so that the sync is of this test's scripts only (the
    session's catalog holds hundreds); with more orphans than the server answers at once (200)."""
    pool = _unique("sync-pool")
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog.upgrade()
    kept, orphan = _unique("kept"), _unique("orphan")
    try:
        for name in (kept, orphan):
            await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=ssh_host), "true\n", author="tests")
        async with get_client() as client:
            deployed = await _deployment(client, kept)
            await client.delete_deployment(deployed.id)  # behind SMS's back
            with catalog.session() as session:
                remove_script(session, orphan, author="tests")  # the catalog forgot it; Prefect did not
            # Orphans that sort before ``orphan``, so that it is on the second page; and a deployment
            # of the flow in another pool, which is not this SMS's to remove.
            fillers = [f"filler-{n:03d}-{orphan}" for n in range(200)]
            elsewhere, other_pool = _unique("elsewhere"), _unique("other-pool")
            await client.create_work_pool(WorkPoolCreate(name=other_pool, type="sms"))
            limit = asyncio.Semaphore(8)

            async def create(name: str, in_pool: str) -> None:
                async with limit:
                    await client.create_deployment(flow_id=deployed.flow_id, name=name, work_pool_name=in_pool)

            await asyncio.gather(*(create(f, pool) for f in fillers), create(elsewhere, other_pool))

            report = await scripts.sync(catalog)

            assert (report.deployed, report.removed) == ([kept], sorted([*fillers, orphan]))
            assert (await _deployment(client, kept)).parameters == {"script": kept}
            with pytest.raises(ObjectNotFound):
                await _deployment(client, orphan)
            assert (await _deployment(client, elsewhere)).work_pool_name == other_pool
            await client.delete_deployment((await _deployment(client, elsewhere)).id)
            await client.delete_work_pool(other_pool)
    finally:
        catalog.dispose()


# --------------------------------------------------------------------------- 3. the real worker


async def _deployed(catalog: Catalog, host: str, content: str, **spec: Any) -> str:
    name = _unique("worker")
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="bash", host=host, **spec), content, author="tests")
    return name


async def test_worker_runs_a_deployment_started_as_the_prefect_ui_does(catalog, ssh_host, worker_client):
    name = await _deployed(catalog, ssh_host, 'echo "hello from $1"\n', default_args=["the worker"])
    deployment = await _deployment(worker_client, name)
    started = time.monotonic()
    flow_run = await worker_client.create_flow_run_from_deployment(deployment.id)
    result = await _final(catalog, str(flow_run.id))
    print(f"worker run, create → completed: {time.monotonic() - started:.2f} s")

    assert (result.state, result.exit_code, result.output_tail) == ("COMPLETED", 0, ["stdout: hello from the worker"])
    record = _record(catalog, str(flow_run.id))
    assert (record.script_name, record.host, record.trigger) == (name, ssh_host, "prefect")
    assert record.remote_pid is not None


async def test_runs_start_and_wait_return_exit_code_and_output_tail(catalog, ssh_host, worker_client):
    name = await _deployed(catalog, ssh_host, 'echo "args: $*"\necho "bad news" >&2\nexit 42\n')
    started = time.monotonic()
    run_id = await runs.start(catalog, name, args=["a b", "c"], trigger="cli", user="alice")
    result = await _final(catalog, run_id)
    print(f"runs.start → final: {time.monotonic() - started:.2f} s")

    assert (result.state, result.exit_code) == ("FAILED", 42)
    assert result.message == f"{name} failed with exit code 42; last stderr: bad news"
    assert sorted(result.output_tail) == ["stderr: bad news", "stdout: args: a b c"]
    record = _record(catalog, run_id)
    assert (record.trigger, record.requested_by) == ("cli", "alice")


# --------------------------------------------------------------------------- 4. cancellation


async def _cancel_as_the_ui_does(run_id: str) -> None:
    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(run_id), Cancelling(), force=True)


async def _cancel_with_sms_stop(run_id: str) -> None:
    assert await runs.stop(run_id) == "CANCELLING"


@pytest.mark.parametrize(
    ("cancel", "ignores_term"),
    [(_cancel_as_the_ui_does, False), (_cancel_with_sms_stop, True)],
    ids=["prefect-ui", "sms-stop-script-ignores-TERM"],
)
async def test_cancelling_a_worker_run_kills_every_process_of_the_script(
    catalog, ssh_host, ssh_server, prefect_worker, cancel, ignores_term
):
    marker = _marker()
    pattern = f"sleep {marker}"
    # Backgrounded grandchildren of every kind; with ``trap '' TERM`` the last two sleeps ignore
    # TERM too (inherited), so only the KILL after the grace period ends them.
    content = (
        f"sleep {marker} &\n(sleep {marker}; true) &\nsh -c 'sleep {marker} & wait' &\n"
        f"nohup sleep {marker} >/dev/null 2>&1 &\nsetsid sleep {marker} &\n(sh -c 'sleep {marker} & exit 0' &)\n"
        + ("trap '' TERM\n" if ignores_term else "")
        + f"sleep {marker} &\necho started\nsleep {marker}\n"
    )
    # A 2 s grace (not the default 5 s) leaves the 10 s window room for a loaded machine's latency.
    name = await _deployed(catalog, ssh_host, content, kill_grace_seconds=2 if ignores_term else 5)
    run_id = await runs.start(catalog, name, trigger="cli", user="tests")
    try:
        assert await _eventually(lambda: _record_pid(catalog, run_id), WORKER_TIMEOUT, interval=0.3)
        assert await _eventually(lambda: len(_alive(ssh_server, pattern)) >= 9, 10), _alive(ssh_server, pattern)

        requested = time.monotonic()
        await cancel(run_id)
        gone = await _eventually(lambda: not _alive(ssh_server, pattern), 10, interval=0.1)
        gone_after = time.monotonic() - requested
        result = await _final(catalog, run_id, timeout=60)
        final_after = time.monotonic() - requested
        print(
            f"cancel ({'script ignores TERM' if ignores_term else 'plain'}) → processes gone: {gone_after:.2f} s; "
            f"→ final state {result.state}: {final_after:.2f} s"
        )

        async with get_client() as client:
            history = [(s.name, s.message) for s in await client.read_flow_run_states(uuid.UUID(run_id))]
        assert gone, f"still running {gone_after:.1f} s after the cancel: {_alive(ssh_server, pattern)}"
        assert result.state == "CANCELLED", (history, _worker_log_tail(prefect_worker))
        assert [state_name for state_name, _ in history][-2:] == ["Cancelling", "Cancelled"]
        with catalog.session() as session:
            record = get_run(session, run_id)
        assert record.ended_at is not None and record.exit_code is None
        # The log says what was killed, and nothing claims the run was still running.
        stopped = ("WARNING", f"stopped: process group {record.remote_pid} killed on {ssh_host}")
        lines = await _logs_containing(run_id, stopped)
        assert stopped in lines, lines[-5:]
        assert not [message for _, message in lines if "Finished in state Running" in message], lines[-5:]
    finally:
        for line in _alive(ssh_server, pattern):  # leave nothing behind for the next test
            os.kill(int(line.split()[0]), 9)


def _worker_log_tail(worker: Any, chars: int = 8000) -> str:
    return worker.log_path.read_text(errors="replace")[-chars:]


def _record_pid(catalog: Catalog, run_id: str) -> int | None:
    try:
        return _record(catalog, run_id).remote_pid
    except NotFound:  # the flow has not recorded the run yet
        return None
