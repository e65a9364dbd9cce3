"""Legacy SSH profile and host health against real peers: the modern sshd, a second sshd that
offers only legacy algorithms, and a Prefect server for the host blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from blocks.hosts import LocalHost
from sms_plugin import hosts
from sms_plugin.errors import HostUnreachable, IncompatibleHost
from sms_plugin.transports.ssh import LEGACY_ALGORITHMS, SSHTarget, SSHTransport, fetch_host_key, handshake

from tests.integration.conftest import block_of, target_of
from tests.integration.test_transports import run

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
KSH_SCRIPT = 'echo "ksh ${.sh.version:+yes} $1"\nprint -u2 "to err"\nexit 7\n'


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def legacy_target(legacy_ssh_server) -> SSHTarget:
    return target_of(legacy_ssh_server, legacy=True)


async def saved(block) -> str:
    name = unique("chk")
    await hosts.add(name, block)
    return name


# ---------------------------------------------------------------- legacy profile on the transport


async def test_legacy_host_runs_a_ksh_script_on_a_legacy_only_server(legacy_target):
    started = time.monotonic()
    async with await SSHTransport.connect(legacy_target) as ssh:
        connect_seconds = time.monotonic() - started
        agreed = ssh.negotiated()
        code, lines = await run(ssh, "ksh", KSH_SCRIPT, ["world"])
    assert code == 7
    assert sorted((line.stream, line.text) for line in lines) == [("stderr", "to err"), ("stdout", "ksh yes world")]
    assert agreed.kex == "diffie-hellman-group14-sha1"
    assert agreed.host_key_type == "ssh-rsa"
    assert agreed.cipher in ("aes128-cbc", "3des-cbc")
    assert agreed.mac == "hmac-sha1"
    assert agreed.server_version.startswith("SSH-2.0-OpenSSH_")
    print(f"legacy connect {connect_seconds:.3f} s")


async def test_modern_host_refuses_a_legacy_only_server_and_says_why(legacy_target):
    modern = dataclasses.replace(legacy_target, legacy=False)
    with pytest.raises(IncompatibleHost) as raised:
        await SSHTransport.connect(modern)
    message = str(raised.value)
    assert "no acceptable kex algorithm" in message
    assert "only offers legacy algorithms" in message
    assert "diffie-hellman-group14-sha1" in message and "ssh-rsa" in message
    assert "mark the host legacy" in message


async def test_modern_host_never_negotiates_legacy_algorithms(ssh_target):
    started = time.monotonic()
    async with await SSHTransport.connect(ssh_target) as ssh:
        connect_seconds = time.monotonic() - started
        agreed = ssh.negotiated()
    assert agreed.legacy == []
    assert {agreed.kex, agreed.host_key_type, agreed.cipher, agreed.mac}.isdisjoint(LEGACY_ALGORITHMS)
    print(f"modern connect {connect_seconds:.3f} s ({agreed})")


async def test_modern_host_with_a_pinned_rsa_key_gets_it_with_sha2_signatures(ssh_target, ssh_server):
    [rsa_line] = [line for line in ssh_server.host_public_keys if line.startswith("ssh-rsa ")]
    async with await SSHTransport.connect(dataclasses.replace(ssh_target, host_keys=[rsa_line])) as ssh:
        agreed = ssh.negotiated()
    assert agreed.host_key_type in ("rsa-sha2-512", "rsa-sha2-256")


async def test_host_key_of_a_legacy_server_is_read_only_with_the_legacy_profile(legacy_ssh_server):
    key = await asyncio.to_thread(fetch_host_key, legacy_ssh_server.host, legacy_ssh_server.port, 5, legacy=True)
    assert f"{key.get_name()} {key.get_base64()}" == legacy_ssh_server.host_public_keys[0]
    assert key.get_name() == "ssh-rsa"
    with pytest.raises(HostUnreachable, match="only offers legacy algorithms"):
        await asyncio.to_thread(fetch_host_key, legacy_ssh_server.host, legacy_ssh_server.port, 5)


async def test_legacy_profile_still_prefers_modern_algorithms(ssh_server):
    _, agreed = await asyncio.to_thread(handshake, ssh_server.host, ssh_server.port, 5, legacy=True)
    assert agreed.legacy == []


# ---------------------------------------------------------------- host check


async def test_check_good_modern_host(prefect_server, ssh_server):
    result = await hosts.check(await saved(block_of(ssh_server)))
    assert result.usable, result.problems
    assert (result.reachable, result.authenticated, result.host_key) == (True, True, "match")
    assert result.problems == []
    assert result.server_version.startswith("SSH-2.0-OpenSSH_")
    assert result.legacy_algorithms == [] and result.kex and result.cipher and result.mac
    assert {result.kex, result.host_key_type, result.cipher, result.mac}.isdisjoint(LEGACY_ALGORITHMS)
    assert all(result.interpreters[name] for name in ("sh", "ksh", "bash", "python3")), result.interpreters
    assert result.login_shell == "/bin/bash"
    assert result.uname.startswith("Linux ")
    assert result.seconds < 5


async def test_check_legacy_host_reports_the_legacy_algorithms(prefect_server, legacy_ssh_server):
    result = await hosts.check(await saved(block_of(legacy_ssh_server, legacy=True)))
    assert result.usable, result.problems
    assert (result.kex, result.host_key_type, result.mac) == ("diffie-hellman-group14-sha1", "ssh-rsa", "hmac-sha1")
    assert result.cipher in ("aes128-cbc", "3des-cbc")
    assert set(result.legacy_algorithms) == {result.kex, "ssh-rsa", result.cipher, "hmac-sha1"}
    assert any("legacy algorithms in use" in note for note in result.notes)
    assert result.interpreters["ksh"]


async def test_check_modern_host_on_legacy_server_is_reported_not_raised(prefect_server, legacy_ssh_server):
    result = await hosts.check(await saved(block_of(legacy_ssh_server)))
    assert not result.usable
    assert (result.reachable, result.authenticated, result.host_key) == (True, False, "not checked")
    assert any("only offers legacy algorithms" in problem for problem in result.problems)


async def test_check_unknown_host_key(prefect_server, ssh_server):
    result = await hosts.check(await saved(block_of(ssh_server, host_keys=[])))
    assert (result.reachable, result.authenticated, result.host_key) == (True, False, "unknown")
    assert result.host_key_fingerprint.startswith("ssh-ed25519 SHA256:")
    assert any("not trusted yet" in problem and "sms host trust" in problem for problem in result.problems)
    assert not result.usable


async def test_check_changed_host_key(prefect_server, ssh_server):
    impostor = paramiko.ECDSAKey.generate()
    block = block_of(ssh_server, host_keys=[f"{impostor.get_name()} {impostor.get_base64()}"])
    result = await hosts.check(await saved(block))
    assert (result.reachable, result.authenticated, result.host_key) == (True, False, "changed")
    assert any("CHANGED" in problem for problem in result.problems)
    assert not result.usable


async def test_check_bad_password(prefect_server, ssh_server):
    block = block_of(ssh_server, private_key=None, password="wrong")
    started = time.monotonic()
    result = await hosts.check(await saved(block))
    assert (result.reachable, result.authenticated, result.host_key) == (True, False, "match")
    assert any("login failed" in problem and "refused the credentials" in problem for problem in result.problems)
    assert not result.usable
    assert time.monotonic() - started < 8


async def test_check_unreachable_port(prefect_server, ssh_server):
    from infra.testbed.ports import free_port

    # A refused connection is told at once, not after the connect timeout (60 s here, beyond the
    # check's own wait): the answer names the refusal, never a timeout.
    port = free_port()
    result = await hosts.check(await saved(block_of(ssh_server, port=port, connect_timeout=60)))
    assert (result.reachable, result.authenticated, result.host_key) == (False, False, "not checked")
    assert any("the connection was refused" in problem and f"port {port}" in problem for problem in result.problems)
    assert not any("did not answer within" in problem for problem in result.problems)
    assert not result.usable


async def test_check_local_host(prefect_server):
    result = await hosts.check(await saved(LocalHost()))
    assert result.usable, result.problems
    assert (result.reachable, result.authenticated, result.host_key) == (True, True, "not checked")
    assert result.interpreters["sh"] and result.uname


# ---------------------------------------------------------------- CLI and listing


def sms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMS, *args], capture_output=True, text=True, timeout=120, env=os.environ)


async def test_cli_host_check_exit_codes(prefect_server, ssh_server, legacy_ssh_server):
    good = await saved(block_of(legacy_ssh_server, legacy=True))
    bad = await saved(block_of(ssh_server, host_keys=[]))
    done = await asyncio.to_thread(sms, "host", "check", good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "diffie-hellman-group14-sha1" in done.stdout and "is usable" in done.stdout
    assert "ksh /" in done.stdout
    done = await asyncio.to_thread(sms, "host", "check", bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "host key      unknown" in done.stdout and "NOT usable" in done.stdout
    listed = await asyncio.to_thread(sms, "host", "list")
    [row] = [line for line in listed.stdout.splitlines() if good in line]
    assert "legacy" in row
