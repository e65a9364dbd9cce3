"""SSH at fleet scale against real sshd: a bounded number of handshakes at once, waiting for a
slot never fails a healthy host, and a refused or silent port gives its own clear error within
the connect timeout, in runs and in the host check alike; the fleet test bed serves each kind of
host as it declares."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.testbed.fleet import FLEET_SCRIPT, Fleet
from sms_plugin.errors import HostKeyError, HostUnreachable
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.host_kinds.checks import HostCheck
from sms_plugin.host_kinds.ssh import SSHHost
from sms_plugin.transports.ssh import ConnectionPool, HandshakeSlots, SSHTarget, SSHTransport

pytestmark = pytest.mark.integration


async def test_200_concurrent_opens_hold_the_handshake_bound(ssh_target):
    slots = HandshakeSlots(8)
    pools = [ConnectionPool(handshakes=slots) for _ in range(4)]  # one bound shared by every pool
    # 200 targets that differ only in their timeout: 200 pool keys, so 200 new connections.
    targets = [dataclasses.replace(ssh_target, connect_timeout=30 + n / 1000) for n in range(200)]
    opened: list[SSHTransport] = []

    async def open_one(n: int) -> None:
        transport = await SSHTransport.connect(targets[n], pool=pools[n % 4])
        opened.append(transport)

    try:
        await asyncio.gather(*(open_one(n) for n in range(200)))
    finally:
        for transport in opened:
            await transport.close()
        for pool in pools:
            pool.close_idle()
    assert len(opened) == sum(pool.opened for pool in pools) == 200
    assert slots.peak == 8 and slots.busy == 0  # the bound was reached and never passed


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that takes TCP connections and never says a word (no SSH banner)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@contextlib.contextmanager
def dropping_port() -> Iterator[int]:
    """A loopback port whose connects time out: its one-place accept queue is full and never
    accepted, so the kernel drops further connection requests, as a firewall would."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue (Linux takes backlog + 1)
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.2)
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def _refusal(target: SSHTarget) -> tuple[str, float]:
    began = time.monotonic()
    with pytest.raises(HostUnreachable) as refused:
        await SSHTransport.connect(target, pool=ConnectionPool())
    return str(refused.value), time.monotonic() - began


async def _check_problem(target: SSHTarget) -> str:
    host = SSHHost(address=target.address, port=target.port, username=target.username,
                   host_keys=list(target.host_keys), connect_timeout=target.connect_timeout)
    result = HostCheck("h", host.kind, host.describe())
    await host.check(result)
    assert not result.reachable and not result.usable
    return result.problems[0]


async def test_a_refused_port_fails_at_once_with_the_same_sentence_in_runs_and_checks(ssh_target):
    from infra.testbed.ports import free_port

    target = dataclasses.replace(ssh_target, port=free_port(), connect_timeout=5)
    message, seconds = await _refusal(target)
    assert message == f"cannot connect to {target.label}: the connection was refused (nothing listens on port {target.port}, or a firewall rejects it)"
    assert seconds < 2
    assert await _check_problem(target) == message


async def test_a_port_that_drops_connections_times_out_within_the_connect_timeout(ssh_target):
    with dropping_port() as port:
        target = dataclasses.replace(ssh_target, port=port, connect_timeout=2)
        message, seconds = await _refusal(target)
        assert message.startswith(f"cannot connect to {target.label}: it did not answer within 2 s")
        assert 1.9 <= seconds < 2 + 3  # the timeout, plus slack for a loaded machine
        assert await _check_problem(target) == message


async def test_a_port_that_never_speaks_ssh_fails_within_the_connect_timeout(ssh_target):
    with silent_port() as port:
        target = dataclasses.replace(ssh_target, port=port, connect_timeout=2)
        message, seconds = await _refusal(target)
        assert message.startswith(f"cannot connect to {target.label}: it took the connection but did not answer "
                                  f"as an SSH server within 2 s")
        assert 1.9 <= seconds < 2 + 3  # the timeout, plus slack for a loaded machine
        assert await _check_problem(target) == message


async def test_waiting_for_a_slot_does_not_count_against_a_healthy_hosts_timeout(ssh_target):
    slots = HandshakeSlots(1)
    pool = ConnectionPool(handshakes=slots)
    healthy = dataclasses.replace(ssh_target, connect_timeout=1)
    with silent_port() as port:
        silent = dataclasses.replace(ssh_target, port=port, connect_timeout=2)
        blocker = asyncio.create_task(SSHTransport.connect(silent, pool=pool))
        while slots.busy == 0:  # the silent host holds the only slot for 2 s
            await asyncio.sleep(0.01)
        began = time.monotonic()
        transport = await SSHTransport.connect(healthy, pool=pool)
        waited = time.monotonic() - began
        await transport.close()
        with pytest.raises(HostUnreachable):
            await blocker
    assert waited > healthy.connect_timeout  # longer than its own timeout, and yet it connected
    assert pool.opened == 1


def _connections_to(port: int) -> int:
    """Established TCP connections to loopback ``port`` (the clients' side), read from the kernel."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                count += int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01"
    return count


async def test_a_lease_cancelled_while_waiting_for_a_slot_leaves_no_connection(ssh_target):
    slots = HandshakeSlots(1)
    pool = ConnectionPool(handshakes=slots)
    target = dataclasses.replace(ssh_target, connect_timeout=29.5)  # a pool key of its own
    before = _connections_to(target.port)
    with slots.slot():  # another host holds the only slot
        waiting = asyncio.create_task(SSHTransport.connect(target, pool=pool))
        await asyncio.sleep(0.3)
        waiting.cancel()  # the fleet run is stopped
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await asyncio.sleep(1.5)  # the waiting thread got the slot meanwhile
    assert slots.busy == 0 and pool.opened == 0
    assert _connections_to(target.port) == before, "the abandoned lease opened a connection and left it"


async def test_the_fleet_test_bed_serves_each_kind_as_declared():
    async def ignore(*args: object) -> None:
        return None

    with Fleet(8, servers=2, mix={"failing": 2, "closed": 1, "wrong-key": 1}) as fleet:
        assert sorted(fleet.expected().values()) == ["closed", "failing", "failing", "good", "good", "good", "good", "wrong-key"]
        results: dict[str, object] = {}
        for entry in fleet.entries:
            target = fleet.host_block(entry).target()  # type: ignore[attr-defined]
            try:
                async with await SSHTransport.connect(target, pool=ConnectionPool()) as transport:
                    result = await execute(transport, ScriptRun(interpreter="sh", content=FLEET_SCRIPT, args=[]),
                                           on_started=ignore, on_output=ignore)
                    results[entry.kind + entry.name] = result.exit_code
            except (HostUnreachable, HostKeyError) as error:
                results[entry.kind + entry.name] = type(error).__name__
        by_kind: dict[str, set[object]] = {}
        for key, value in results.items():
            by_kind.setdefault(key.split("fleet-")[0], set()).add(value)
        assert by_kind == {"good": {0}, "failing": {3}, "closed": {"HostUnreachable"}, "wrong-key": {"HostKeyError"}}
        # The good hosts are spread over both servers; the Ansible inventory names the same entries.
        assert {e.port for e in fleet.entries if e.kind == "good"} == {s.port for s in fleet.servers}
        with tempfile.TemporaryDirectory() as folder:
            inventory = fleet.write_ansible(Path(folder) / "inventory.ini").read_text()
            known_hosts = (Path(folder) / "known_hosts").read_text()
        for entry in fleet.entries:
            assert f"{entry.name} ansible_host={entry.address} ansible_port={entry.port} " in inventory
            assert f"[{entry.address}]:{entry.port} {entry.pinned_key}" in known_hosts
