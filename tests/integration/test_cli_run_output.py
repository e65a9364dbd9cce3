"""`sms run --wait`, `sms logs` and `sms stop` as a program and a person use them, against the test
bed's sshd, a real Prefect server and an sms worker: stdout is the script's bytes (docs/cli.md, "A
run's output"), and a stop answers at once, its processes gone and the run Cancelled within a second."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from infra.testbed.prefect_worker import PrefectWorker
from sms_plugin import hosts, scripts
from sms_plugin.catalog import ScriptSpec
from tests.conftest import _started
from tests.integration.conftest import alive, block_of, until

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
LONG = 600_000  # three pieces in the run log (MAX_LINE_CHARS is 262,144)
SCRIPT = (
    "printf 'to stderr first\\n' >&2; sleep 0.5\n"
    "printf 'plain line\\n'\n"
    "printf 'progress 10%%\\rprogress 100%%\\n'\n"
    "printf 'bad \\377\\376 bytes\\n'\n"
    f"head -c {LONG} /dev/zero | tr '\\0' x; echo\n"
    "printf 'windows\\r\\n'\n"
    "printf 'no newline at the end'\n"
)
STDOUT = (
    b"plain line\nprogress 10%\rprogress 100%\nbad \xef\xbf\xbd\xef\xbf\xbd bytes\n" + b"x" * LONG
    + b"\nwindows\nno newline at the end\n"
)
"""What the script's stdout reads as: invalid UTF-8 as U+FFFD, \\r\\n as \\n, a last newline added."""
RUN_FIELDS = {"run_id", "script", "version", "host", "trigger", "requested_by", "exit_code", "created_at", "started_at",
              "ended_at"}


@pytest.fixture(scope="module")
def sms_pool(prefect_server) -> Iterator[str]:
    """A work pool of type sms of this module's own; the scripts added here deploy to it."""
    name = f"sms-cli-{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=name, type="sms"))

    asyncio.run(create())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", name)
        yield name


@pytest.fixture(scope="module")
def sms_worker(prefect_server, sms_pool, catalog) -> Iterator[PrefectWorker]:
    env = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    peer = _started(PrefectWorker(prefect_server.api_url, pool=sms_pool, worker_type="sms", extra_env=env))
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
async def ssh_host(ssh_server, sms_worker) -> str:
    name = f"out-{uuid.uuid4().hex[:6]}"
    await hosts.add(name, block_of(ssh_server))
    return name


async def _script(catalog, host: str, content: str) -> str:
    name = f"out-{uuid.uuid4().hex[:6]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="bash", host=host), content, author="tests")
    return name


def _shell(command: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, shell=True, capture_output=True, timeout=timeout, env=os.environ,
                          stdin=subprocess.DEVNULL)


def _run_id(stderr: bytes) -> str:
    [line] = [line for line in stderr.decode().splitlines() if line.startswith("sms: run ") and line.endswith(" started")]
    return line.split()[2]


async def test_run_wait_piped_prints_the_scripts_bytes_and_logs_tail_says_what_it_left_out(catalog, ssh_host):
    name = await _script(catalog, ssh_host, SCRIPT)
    done = await asyncio.to_thread(_shell, f"{SMS} run {name} --wait --split-stderr | cat")
    assert done.returncode == 0, done.stderr
    assert done.stdout == STDOUT
    assert done.stderr.count(b"to stderr first\n") == 1 and b"Traceback" not in done.stderr
    run_id = _run_id(done.stderr)

    merged = await asyncio.to_thread(_shell, f"{SMS} logs {run_id}")
    assert merged.returncode == 0 and merged.stdout == b"to stderr first\n" + STDOUT, merged.stderr
    tail = await asyncio.to_thread(_shell, f"{SMS} logs {run_id} --tail 2")
    assert tail.stdout == b"windows\nno newline at the end\n"
    assert tail.stderr.decode().strip() == f"sms: 5 earlier line(s) left out; `sms logs {run_id}` prints them all"

    shown = json.loads((await asyncio.to_thread(_shell, f"{SMS} run show {run_id} -o json")).stdout)
    assert set(shown) == {"run_id", "state", "message", "exit_code", "output_tail", "hosts"}
    assert (shown["run_id"], shown["state"], shown["exit_code"]) == (run_id, "COMPLETED", 0)
    assert shown["output_tail"][-1] == "stdout: no newline at the end"
    [listed] = json.loads((await asyncio.to_thread(_shell, f"{SMS} run list --script {name} -o json")).stdout)
    assert set(listed) == RUN_FIELDS and (listed["run_id"], listed["host"], listed["exit_code"]) == (run_id, ssh_host, 0)
    assert datetime.fromisoformat(listed["ended_at"]) >= datetime.fromisoformat(listed["created_at"])


async def test_script_add_on_an_unknown_host_is_refused_and_creates_nothing(catalog, ssh_host, tmp_path):
    source = tmp_path / "x.sh"
    source.write_text("echo x\n")
    name = f"out-{uuid.uuid4().hex[:6]}"
    done = await asyncio.to_thread(_shell, f"{SMS} script add {name} -t sh -h no-such-host -f {source}")
    assert done.returncode == 2 and done.stderr.decode().count("\n") == 1, done.stderr
    assert done.stderr.decode().startswith("error: no host named 'no-such-host': add it first (`sms host add`); hosts: ")
    assert name not in {script.name for script in scripts.listing(catalog)}


async def test_a_failed_run_says_why_on_stderr_with_the_scripts_exit_status(catalog, ssh_host):
    name = await _script(catalog, ssh_host, "echo partial; exit 3\n")
    done = await asyncio.to_thread(_shell, f"{SMS} run {name} --wait --tail 5")
    assert (done.returncode, done.stdout) == (3, b"partial\n"), done.stderr
    assert f"FAILED: {name} failed with exit code 3" in done.stderr.decode()


async def test_stop_answers_at_once_the_processes_go_and_the_run_reads_cancelled_within_a_second(catalog, ssh_host, ssh_server):
    marker = str(uuid.uuid4().int % 10**6 + 3 * 10**6)
    name = await _script(catalog, ssh_host, f"echo up; sleep {marker}\n")
    started = await asyncio.to_thread(_shell, f"{SMS} run {name}")
    run_id = started.stdout.decode().split()[1]
    assert await until(lambda: alive(ssh_server, f"sleep {marker}"), 60), "the script never started"

    began = time.monotonic()
    stopped = await asyncio.to_thread(_shell, f"{SMS} stop {run_id} --wait")
    gone = time.monotonic()
    assert stopped.returncode == 0, stopped.stderr
    assert b"its processes are gone" in stopped.stdout
    assert alive(ssh_server, f"sleep {marker}") == []

    async def cancelled() -> bool:
        async with get_client() as client:
            state = (await client.read_flow_run(UUID(run_id))).state
        return state is not None and state.type.value == "CANCELLED"

    assert await until(cancelled, 10, interval=0.05)
    print(f"\nsms stop --wait: {gone - began:.2f} s (with the command's start-up); Cancelled {time.monotonic() - gone:.2f} s later")
    assert time.monotonic() - gone < 1.0 + 0.5  # within a second, plus one poll of the state
