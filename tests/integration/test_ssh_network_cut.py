"""A host cut off the network (an sshd in a test-bed network namespace whose packets are dropped
silently): the SSH transport notices the silent connection within its control timeout instead of
waiting on TCP's own (~15 minutes), drops it, and reaches the host from a new connection once it
is back (docs/deploy.md, drill 9, runs the same under load)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from sms_plugin.errors import HostUnreachable, TransportError
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.transports import ssh
from sms_plugin.transports.recovery import reap
from sms_plugin.transports.ssh import ConnectionPool, SSHTransport
from tests.integration.conftest import target_of

pytestmark = pytest.mark.integration


async def test_a_script_timing_out_on_a_cut_host_fails_fast_and_is_killed_once_back(cut_off_sshd, monkeypatch):
    server = cut_off_sshd
    netns = server.network
    assert netns is not None
    monkeypatch.setattr(ssh, "CONTROL_TIMEOUT_SECONDS", 1.0)
    target = target_of(server, connect_timeout=2)
    pool = ConnectionPool()
    marker = str(uuid.uuid4().int % 10**6).rjust(6, "1")
    run_id = uuid.uuid4().hex
    groups: list[int | None] = []

    async def cut_when_started(pid: int | None) -> None:
        groups.append(pid)
        netns.cut()

    async def ignore(stream: str, message: str) -> None:
        return None

    transport = await SSHTransport.connect(target, pool=pool)
    sock = transport._client.get_transport().sock  # noqa: SLF001 - the socket option is what is tested
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == ssh.DEAD_LINK_SECONDS * 1000
    began = time.monotonic()
    with pytest.raises(TransportError, match="did not answer in time"):
        await execute(transport, ScriptRun(interpreter="sh", content=f"sleep 60.{marker}\n", timeout_seconds=2,
                                           kill_grace_seconds=1, run_id=run_id), on_started=cut_when_started, on_output=ignore)
    failed_after = time.monotonic() - began
    await transport.close()
    # the 2 s timeout, then one control timeout for the kill, not TCP's minutes of retries
    assert failed_after < 2 + 1 + 3, failed_after
    assert not transport._lease.alive(), "the silent connection was kept"  # noqa: SLF001
    assert server.served(marker), "the script is gone although its host was cut off: the test proves nothing"

    with pytest.raises(HostUnreachable):
        await SSHTransport.connect(target, pool=pool)
    netns.restore()
    again = await SSHTransport.connect(target, pool=pool)
    try:
        reaped = await reap(again, run_id, groups[0], grace_seconds=1)
    finally:
        await again.close()
    assert reaped.found and reaped.pgid == groups[0]
    assert not server.served(marker)
    assert pool.opened == 2
