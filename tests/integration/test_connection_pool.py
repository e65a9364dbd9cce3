"""Connection reuse against a real sshd: runs to one host share connections, a dead connection
fails only its own runs, with a clear message, and the next run reconnects; a live connection is
never closed under its runs (a channel the server refuses is waited for, a slow command fails alone)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from infra.testbed.sshd import SshServer
from sms_plugin.errors import TransportError
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.transports import ssh
from sms_plugin.transports.ssh import ConnectionPool, SSHTransport
from tests.conftest import _started
from tests.integration.conftest import target_of

pytestmark = pytest.mark.integration


def server_connections(port: int) -> int:
    """Established TCP connections to the sshd, counted on the server's side of the socket."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


async def _run(pool: ConnectionPool, target, content: str, args: list[str] | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []

    async def keep(stream: str, message: str) -> None:
        lines.extend(message.splitlines())

    async def ignore(pid: int | None) -> None:
        return None

    transport = await SSHTransport.connect(target, pool=pool)
    try:
        result = await execute(transport, ScriptRun(interpreter="sh", content=content, args=args or []),
                               on_started=ignore, on_output=keep)
    finally:
        await transport.close()
    return result.exit_code, lines


async def test_sequential_runs_share_one_connection(ssh_target, ssh_server):
    pool = ConnectionPool()
    for n in range(30):
        assert await _run(pool, ssh_target, 'echo "run $1"\n', [str(n)]) == (0, [f"run {n}"])
    assert pool.opened == 1
    assert server_connections(ssh_server.port) >= 1  # the idle one stays for the next run


async def test_30_concurrent_runs_open_8_connections_within_max_sessions(ssh_target, ssh_server):
    pool = ConnectionPool()
    before = server_connections(ssh_server.port)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, server_connections(ssh_server.port) - before)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(*(_run(pool, ssh_target, 'sleep 1; echo "run $1"\n', [str(n)]) for n in range(30)))
    finally:
        sampler.cancel()
    assert results == [(0, [f"run {n}"]) for n in range(30)]
    print(f"30 concurrent runs: {pool.opened} connections opened, at most {peak} seen on the server")
    assert pool.opened == 8  # 4 runs per connection, 2 channels each: within MaxSessions 10
    assert peak <= 8


def _sshd_session_of(pid: int) -> int:
    """The sshd process that serves the connection of remote process ``pid``."""
    while pid > 1:
        name = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
        if name.startswith("sshd:"):
            return pid
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    raise AssertionError("no sshd ancestor")


async def test_a_dead_connection_fails_only_its_runs_and_the_next_run_reconnects(ssh_target, ssh_server):
    pool = ConnectionPool(runs_per_connection=1)
    victim_transport = await SSHTransport.connect(ssh_target, pool=pool)
    survivor = asyncio.create_task(_run(pool, ssh_target, "sleep 2; echo survived\n"))
    marker = str(uuid.uuid4().int % 10**6 + 5 * 10**6)
    from sms_plugin.transports.base import Plan

    run_id = str(uuid.uuid4())
    process = await victim_transport.launch(Plan(program=("sh", "-c", f"echo started; sleep {marker}"), run_id=run_id))
    lines = process.lines()
    assert (await anext(lines)).text == "started"
    os.kill(_sshd_session_of(process.pid), signal.SIGKILL)

    with pytest.raises(TransportError, match="was lost while the script ran"):
        await asyncio.wait_for(process.wait(), 30)
    await victim_transport.close()
    assert await survivor == (0, ["survived"])

    cleaner = await SSHTransport.connect(ssh_target, pool=pool)  # the survivor's idle connection
    try:
        assert await cleaner.recorded_group(run_id) == process.pid  # the script outlived its connection
        assert await cleaner.end_run(process.pid, run_id, grace_seconds=1)
    finally:
        await cleaner.close()
    assert [p for p in ssh_server.processes(f"sleep {marker}") if " Z" not in p] == []
    assert pool.opened == 2  # the dead connection was dropped, not handed out again

    # The idle connection dies too (server restarted, firewall...): the next run reconnects.
    _kill_server_side(cleaner, ssh_server.port)
    assert await asyncio.wait_for(_run(pool, ssh_target, "echo again\n"), 30) == (0, ["again"])
    assert pool.opened == 3


def _kill_server_side(transport: SSHTransport, port: int) -> None:
    client_port = transport._client.get_transport().sock.getsockname()[1]
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
                         capture_output=True, text=True, check=True).stdout
    pids = {int(pid) for pid in re.findall(r"pid=(\d+)", out)}
    assert pids, out
    for pid in pids:  # sshd's monitor and its child: the second may be gone with the first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while transport._client.get_transport().is_active() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_session_sshd() -> Iterator[SshServer]:
    """An sshd that allows 2 channels per connection (its MaxSessions)."""
    peer = _started(SshServer(max_sessions=2))
    yield peer
    peer.stop()


async def test_channels_the_server_refuses_are_waited_for_and_the_connection_is_kept(two_session_sshd):
    """8 runs at once on one connection of a server that allows 2 channels each: the refused
    channel opens (several at the same instant) wait for a free one; nothing closes the connection."""
    pool = ConnectionPool(runs_per_connection=8)
    target = target_of(two_session_sshd)
    results = await asyncio.gather(*(_run(pool, target, 'sleep 0.3; echo "run $1"\n', [str(n)]) for n in range(8)))
    assert results == [(0, [f"run {n}"]) for n in range(8)]
    assert pool.opened == 1


async def test_a_slow_command_fails_alone_and_leaves_the_runs_on_its_connection(ssh_target, ssh_server, monkeypatch):
    """A short command that does not finish within CONTROL_TIMEOUT_SECONDS (here: an upload to a
    FIFO nobody reads) fails; the connection still answers, so the script running on it goes on."""
    monkeypatch.setattr(ssh, "CONTROL_TIMEOUT_SECONDS", 1.0)
    pool = ConnectionPool()
    running = asyncio.create_task(_run(pool, ssh_target, "sleep 3; echo survived\n"))
    stuck = await SSHTransport.connect(ssh_target, pool=pool)
    fifo = f"/tmp/sms-test-fifo-{uuid.uuid4().hex}"
    try:
        status, _ = await stuck._io("making a FIFO", lambda: stuck._exec_status(f"mkfifo {fifo}"))  # the user's own
        assert status == 0
        with pytest.raises(TransportError, match="did not answer in time|did not finish"):
            await stuck.upload(b"never read", fifo, 0o600)
        assert await running == (0, ["survived"])
        assert pool.opened == 1
    finally:
        await stuck.remove(fifo)
        await stuck.close()
