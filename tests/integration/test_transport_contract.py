"""The transport contract against real peers: a run's upload folder is gone however the run ends
(local, sshd, the loopback WinRM host), and a stop ends Cancelled even when the SSH connection
dies under it (the test freezes, then kills, the real sshd process serving the run)."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import paramiko
import pytest

from flows.run_script import run_script
from infra.testbed import wine
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import ScriptSpec, add_script, get_run, list_audit
from sms_plugin.errors import InvalidInput, NotFound
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.transports.base import MAX_LINE_CHARS, Transport
from sms_plugin.transports.psrp import WindowsTransport, WinRMTarget
from sms_plugin.transports.recovery import reap
from sms_plugin.transports.ssh import SSHTransport
from tests.integration.conftest import alive, block_of, long_line_pieces, target_of, until

pytestmark = pytest.mark.integration

POSIX = {
    "completed": ("sh", "echo started\n"),
    "failed": ("sh", "echo started\necho broken >&2\nexit 3\n"),
    "stopped": ("sh", "echo started\nsleep 600\n"),
    "refused": ("powershell", "Write-Output 'never'\n"),  # a PowerShell plan on a POSIX host
}
WINDOWS = {
    "completed": ("cmd", "@echo off\necho started\n"),
    "stopped": ("cmd", "@echo off\necho started\nping -n 600 127.0.0.1 >nul\n"),
}


async def _run_to_its_end(transport: Transport, plan: tuple[str, str], ending: str, on_host) -> str:
    """Runs a script that ends as ``ending`` says and returns its upload folder; ``on_host`` turns
    the folder into a path of this machine, where the test checks that it exists while the run runs."""
    run_id = str(uuid.uuid4())
    interpreter, content = plan
    run = ScriptRun(interpreter=interpreter, content=content, run_id=run_id, name="contract")
    folder = await transport.uploads_of(run_id)
    seen: list[str] = []

    async def output(stream: str, message: str) -> None:
        seen.append(message)

    async def started(pid: int | None) -> None:
        assert on_host(folder).is_dir(), "the upload folder should exist while the script runs"

    task = asyncio.create_task(execute(transport, run, on_started=started, on_output=output))
    if ending == "stopped":
        assert await until(lambda: "started" in seen, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    elif ending == "refused":
        with pytest.raises(InvalidInput, match="Windows hosts only"):
            await task
    else:
        assert (await task).exit_code == (3 if ending == "failed" else 0)
    return folder


@pytest.mark.parametrize("ending", list(POSIX))
async def test_the_upload_folder_is_removed_however_the_run_ends(transport, ending):
    folder = await _run_to_its_end(transport, POSIX[ending], ending, Path)
    assert not Path(folder).exists()
    assert Path(folder).parent.is_dir()  # the scratch folder itself stays


@pytest.mark.parametrize("ending", ["completed", "stopped"])
async def test_the_upload_folder_is_removed_on_a_legacy_sshd_with_ksh(legacy_ssh_server, ending):
    async with await SSHTransport.connect(target_of(legacy_ssh_server, legacy=True)) as ssh:
        with pytest.raises(paramiko.SSHException):  # this server has no SFTP: SMS does not need it
            ssh._client.open_sftp()
        folder = await _run_to_its_end(ssh, ("ksh", POSIX[ending][1]), ending, Path)
    assert not Path(folder).exists()


def _windows_target(winrm_host: Any) -> WinRMTarget:
    return WinRMTarget(address="127.0.0.1", port=winrm_host.port, username=winrm_host.username,
                       password=winrm_host.password, auth="ntlm", operation_timeout=5)


@pytest.mark.parametrize("ending", list(WINDOWS))
async def test_the_upload_folder_is_removed_on_windows(winrm_host, ending):
    async with await WindowsTransport.connect(_windows_target(winrm_host)) as windows:
        folder = await _run_to_its_end(windows, WINDOWS[ending], ending, wine.unix_path)
        assert not wine.unix_path(folder).exists()


async def test_the_reaper_removes_a_dead_windows_runs_upload_from_a_new_connection(winrm_host):
    """What the reaper does for a Windows run after its worker died: no recovery capability, so
    it ends nothing itself (the shell's idle timeout does) but removes the upload."""
    run_id = str(uuid.uuid4())
    async with await WindowsTransport.connect(_windows_target(winrm_host)) as crashed:
        script = crashed.join(await crashed.uploads_of(run_id), "left.bat")
        await crashed.upload(b"@echo off\r\n", script)
    assert wine.unix_path(script).is_file()
    async with await WindowsTransport.connect(_windows_target(winrm_host)) as fresh:
        reaped = await reap(fresh, run_id, None, 1)
    assert reaped.found is None and "idle timeout" in str(reaped)
    assert not wine.unix_path(script).parent.exists()


# --------------------------------------------------------------------------- long lines

LONG_LINE = "head -c {length} /dev/zero | tr '\\0' x; echo; echo after\n"
"""A bash script printing one line of ``length`` "x", then the line "after"."""


async def test_a_line_over_the_limit_reads_back_in_marked_pieces_from_prefects_run_log(catalog, ssh_server, monkeypatch):
    """Without Elasticsearch the run log is Prefect's (test_logs_elasticsearch.py reads the same
    pieces from Elasticsearch); `sms logs` joins the pieces back into the script's line."""
    monkeypatch.delenv("SMS_ELASTICSEARCH_URL", raising=False)
    host = f"long-{uuid.uuid4().hex[:6]}"
    await hosts.add(host, block_of(ssh_server))
    name = f"long-{uuid.uuid4().hex[:6]}"
    length = 2 * MAX_LINE_CHARS + 1000
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="bash", host=host), content=LONG_LINE.format(length=length),
                   author="tests")
    state = await run_script(script=name, return_state=True)
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    messages = [line.message async for line in runs.logs(run_id) if line.stream == "stdout"]
    assert len(long_line_pieces(messages, length)) == 3
    sms = str(Path(sys.executable).with_name("sms"))
    cli = subprocess.run([sms, "logs", run_id], env=dict(os.environ), capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == b"x" * length + b"\nafter\n"


# --------------------------------------------------------------------------- a stop on a dying connection


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw.split(b"\0") if b"=" in entry)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _session_processes(leader: int) -> list[int]:
    """The sshd processes serving the connection the run was started on (``sshd: user@notty`` and
    its privileged monitor): the ancestors of the run's leader whose command line says so."""
    found, pid = [], _parent(leader)
    while pid > 1:
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd"):
            if b" -f " in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
                break  # the listening sshd itself
            found.append(pid)
        pid = _parent(pid)
    return found


def _unread_bytes(server_port: int, client_port: int) -> int:
    """What the server side of the connection has received but not read (``/proc/net/tcp``)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            return int(fields[4].split(":")[1], 16)
    return 0


async def test_a_stop_stays_a_stop_when_the_connection_dies_under_it(ssh_target, ssh_server):
    """execute() itself: the kill meets a dead connection (paramiko raises), the caller still gets
    its cancellation, not the transport's error."""
    marker = str(uuid.uuid4().int % 10**6 + 6 * 10**6)
    run = ScriptRun(interpreter="sh", content=f"echo started\nsleep {marker}\n", run_id=str(uuid.uuid4()),
                    name="dying", kill_grace_seconds=1)
    transport = await SSHTransport.connect(ssh_target)
    leaders: list[int] = []
    seen: list[str] = []

    async def started(pid: int | None) -> None:
        leaders.append(pid or 0)

    async def output(stream: str, message: str) -> None:
        seen.append(message)

    task = asyncio.create_task(execute(transport, run, on_started=started, on_output=output))
    try:
        assert await until(lambda: "started" in seen, 30)
        client_port = int(_environ(leaders[0])["SSH_CONNECTION"].split()[1])
        serving = _session_processes(leaders[0])
        assert serving, "no sshd process found for the connection"
        for pid in serving:
            os.kill(pid, signal.SIGSTOP)
        try:
            task.cancel()  # the stop asks the frozen server for a channel ...
            assert await until(lambda: _unread_bytes(ssh_server.port, client_port) > 0, 30), "the stop never began"
        finally:
            for pid in serving:  # ... and the connection dies under it
                os.kill(pid, signal.SIGKILL)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    finally:
        await transport.close()
        for line in alive(ssh_server, f"sleep {marker}"):  # what the reaper would end
            os.kill(int(line.split()[0]), signal.SIGKILL)


async def test_a_stop_ends_cancelled_when_the_connection_dies_under_it(catalog, ssh_server, prefect_worker):
    host = f"dying-{uuid.uuid4().hex[:6]}"
    await hosts.add(host, block_of(ssh_server))
    marker = str(uuid.uuid4().int % 10**6 + 5 * 10**6)
    name = f"dying-{uuid.uuid4().hex[:6]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host, kill_grace_seconds=1),
                      f"echo started\nsleep {marker}\n", author="tests")
    run_id = await runs.start(catalog, name, trigger="cli", user="tests")
    upload = Path(pwd.getpwnam(ssh_server.username).pw_dir) / ".sms" / "run" / run_id

    def leader() -> int | None:
        with catalog.session() as session:
            try:
                return get_run(session, run_id).remote_pid
            except NotFound:
                return None

    pgid = await until(leader, 90)
    assert pgid, "the run never started"
    assert await until(lambda: alive(ssh_server, f"sleep {marker}"), 10)
    assert upload.is_dir()
    client_port = int(_environ(pgid)["SSH_CONNECTION"].split()[1])
    serving = _session_processes(pgid)
    assert serving, "no sshd process found for the run's connection"
    for pid in serving:  # the connection stops answering; the flow cannot tell yet
        os.kill(pid, signal.SIGSTOP)
    try:
        assert await runs.stop(run_id) == "CANCELLING"
        # The flow's stop asks the server for a channel over the frozen connection: it waits unread.
        assert await until(lambda: _unread_bytes(ssh_server.port, client_port) > 0, 60), "the stop never began"
    finally:
        for pid in serving:  # the connection dies under the stop (the kernel resets it)
            os.kill(pid, signal.SIGKILL)

    result = await runs.wait(catalog, run_id, timeout=90, poll=0.3)
    assert result.state == "CANCELLED", result.message
    # The on_cancellation hook reaped the run from a new connection: script gone, upload gone.
    assert await until(lambda: not alive(ssh_server, f"sleep {marker}"), 60), alive(ssh_server, f"sleep {marker}")
    assert await until(lambda: not upload.exists(), 30)
    with catalog.session() as session:
        reaps = [event for event in list_audit(session, object_name=run_id) if event.action == "run.reap"]
    assert any(event.outcome == "ok" for event in reaps), [(e.actor, e.detail) for e in reaps]
