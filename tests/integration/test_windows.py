"""Windows hosts over WinRM against the loopback test host (infra/testbed/winrm_host.py).

.bat scripts run for real in Wine's cmd.exe; the PowerShell commands of the transport (upload,
remove, the .ps1 wrapper) are answered by the test host's explicit stub. See docs/windows.md for
what this does not prove.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from pydantic import SecretStr

from blocks.hosts import WindowsHost
from flows.run_script import run_script
from infra.testbed import wine
from sms_plugin import apply as declarative
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import ScriptSpec, add_script, get_run, get_script
from sms_plugin.deploy import deployment_name
from sms_plugin.errors import AuthenticationFailed, HostUnreachable, InvalidInput, TransportError
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.transports.base import OutputLine
from sms_plugin.transports.interpreters import INTERPRETERS
from sms_plugin.transports.psrp import PowerShellProcess, WindowsProcess, WindowsTransport, WinRMTarget

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

STREAMED_BAT = "@echo off\necho first\nping -n 3 127.0.0.1 >nul\necho second\necho to-stderr 1>&2\nexit /b %1\n"


def http_target(host: Any, **overrides: Any) -> WinRMTarget:
    """The test host over HTTP with NTLM (message encryption on, as by default)."""
    values: dict[str, Any] = dict(address="127.0.0.1", port=host.port, username=host.username, password=host.password,
                                  auth="ntlm", operation_timeout=5)
    return WinRMTarget(**{**values, **overrides})


def https_target(host: Any, **overrides: Any) -> WinRMTarget:
    """The test host over HTTPS with Basic and its session CA pinned."""
    return http_target(host, **{"port": host.tls_port, "scheme": "https", "auth": "basic", "ca_path": str(host.ca_path),
                                **overrides})


@pytest.fixture
async def windows(winrm_host: Any) -> AsyncIterator[WindowsTransport]:
    transport = await WindowsTransport.connect(http_target(winrm_host))
    yield transport
    await transport.close()


async def _upload(transport: WindowsTransport, interpreter: str, text: str) -> str:
    spec = INTERPRETERS[interpreter]
    path = transport.join(await transport.scratch_dir(), f"test-{os.urandom(4).hex()}{spec.suffix}")
    await transport.upload(spec.encode(text), path)
    return path


async def _timed_lines(process: Any) -> list[tuple[float, OutputLine]]:
    return [(time.monotonic(), line) async for line in process.lines()]


@pytest.mark.parametrize("code", [3, 0])
async def test_bat_streams_lines_as_they_come_and_returns_its_exit_code(windows, code):
    path = await _upload(windows, "cmd", STREAMED_BAT)
    process = await windows.launch(INTERPRETERS["cmd"].plan(path, [str(code)]))
    timed = await _timed_lines(process)
    assert await process.wait() == code
    lines = [(line.stream, line.text) for _, line in timed]
    assert lines == [("stdout", "first"), ("stdout", "second"), ("stderr", "to-stderr ")] or lines == [
        ("stdout", "first"), ("stderr", "to-stderr "), ("stdout", "second")]
    arrival = {line.text: at for at, line in timed}
    # "first" was delivered before the 2 s pause ended, not with the rest at exit.
    assert arrival["second"] - arrival["first"] > 1.0, timed


async def test_stop_during_a_long_bat_kills_the_wine_process_tree(windows, winrm_host):
    path = await _upload(windows, "cmd", "@echo off\necho started\nping -n 1000 127.0.0.1\n")
    process = await windows.launch(INTERPRETERS["cmd"].plan(path, [], run_id="stop-test"))
    lines = process.lines()
    assert (await anext(lines)).text == "started"
    before = winrm_host.wine_processes()
    assert before, "the .bat's Wine processes should be visible on the test host"
    assert any(b"ping" in _cmdline(pid) for pid in before), [_cmdline(pid) for pid in before]
    await process.stop(grace_seconds=1)
    assert await asyncio.wait_for(process.wait(), 30) == 1
    deadline = time.monotonic() + 10
    while (left := [pid for pid in before if wine_alive(pid)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not left, f"Wine processes survived the stop: {left}"


def wine_alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_ntlm_over_http_needs_message_encryption(winrm_host):
    async with await WindowsTransport.connect(http_target(winrm_host, encryption="always")) as transport:
        assert (await transport.scratch_dir()).lower().endswith("\\temp\\sms\\run")
    # The test host refuses plain SOAP over HTTP (AllowUnencrypted=false), so the run above was encrypted.
    with pytest.raises(AuthenticationFailed):
        await WindowsTransport.connect(http_target(winrm_host, encryption="never"))


async def test_basic_over_https_with_the_pinned_ca(winrm_host):
    async with await WindowsTransport.connect(https_target(winrm_host)) as transport:
        result = await execute(transport, ScriptRun(interpreter="cmd", content="@echo off\necho over-tls\n"),
                               on_started=_nothing, on_output=_nothing)
        assert result.exit_code == 0
        assert [line.text for line in result.tail] == ["over-tls"]


async def test_wrong_password_fails_clearly(winrm_host):
    for target in (http_target(winrm_host, password="wrong"), https_target(winrm_host, password="wrong")):
        with pytest.raises(AuthenticationFailed, match="refused the credentials"):
            await WindowsTransport.connect(target)


async def test_untrusted_certificate_is_refused_by_default(winrm_host):
    with pytest.raises(HostUnreachable, match="certificate not trusted"):
        await WindowsTransport.connect(https_target(winrm_host, ca_path=None))


def test_basic_over_http_is_refused():
    with pytest.raises(InvalidInput, match="https only"):
        WinRMTarget(address="127.0.0.1", username="u", password="p", auth="basic")


async def test_long_output_and_quiet_phases_outlast_operation_quota_and_timeout(winrm_host):
    """More Receives than the 15-operation quota, and quiet spells longer than OperationTimeout."""
    async with await WindowsTransport.connect(http_target(winrm_host, operation_timeout=1)) as transport:
        loop_bat = "@echo off\nfor /L %%i in (1,1,20) do (\n  echo line %%i\n  ping -n 1 127.0.0.1 >nul\n)\nping -n 4 127.0.0.1 >nul\necho end\n"
        path = await _upload(transport, "cmd", loop_bat)
        process = await transport.launch(INTERPRETERS["cmd"].plan(path, []))
        assert isinstance(process, WindowsProcess)
        texts = [line.text async for line in process.lines()]
        assert await process.wait() == 0
        assert texts == [f"line {i}" for i in range(1, 21)] + ["end"]
        assert process.receives > 15, process.receives


async def test_utility_shell_is_recycled_before_the_command_quota(windows):
    paths = [await _upload(windows, "cmd", f"echo {i}\n") for i in range(20)]  # 20 commands > 15
    for path in paths:
        await windows.remove(path)
        assert not wine.unix_path(path).exists()
    assert windows.utility.shells_opened >= 2


async def test_without_recycling_the_host_refuses_the_16th_command(winrm_host):
    """The quota the recycling test relies on is really enforced by the test host."""
    async with await WindowsTransport.connect(http_target(winrm_host, commands_per_shell=20)) as transport:
        for i in range(15):
            await transport.remove(f"C:\\nothing-{i}.txt")
        with pytest.raises(TransportError, match="MaxProcessesPerShell"):
            await transport.remove("C:\\nothing-16.txt")


async def test_upload_of_5_mb_arrives_byte_identical(windows):
    content = os.urandom(5 * 1024 * 1024)
    path = windows.join(await windows.scratch_dir(), "big.bin")
    began = time.monotonic()
    await windows.upload(content, path)  # raises unless the host's SHA-256 matches
    print(f"5 MB upload: {time.monotonic() - began:.1f} s")
    arrived = wine.unix_path(path).read_bytes()
    assert hashlib.sha256(arrived).digest() == hashlib.sha256(content).digest()
    await windows.remove(path)


HOSTILE = ["a b", "it's", "'; Remove-Item C:\\ -Recurse; '", "$(calc)", "`n", '"quoted"', "\u2019curly\u2018",
           "%PATH%", "a&b|c<d>e", "", "ünï"]


async def test_hostile_arguments_arrive_intact_in_powershell(windows):
    path = await _upload(windows, "powershell", "param($a)\n")
    process = await windows.launch(INTERPRETERS["powershell"].plan(path, HOSTILE))
    assert isinstance(process, PowerShellProcess)
    texts = [line.text async for line in process.lines()]
    assert await process.wait() == 0
    assert texts == [f"arg[{i}]={value}" for i, value in enumerate(HOSTILE)]


STREAMED_PS1 = "Write-Output 'first'\nStart-Sleep -Seconds 2\nWrite-Error 'went wrong'\nWrite-Output 'second'\nexit 4\n"


async def test_ps1_runs_in_a_psrp_pipeline_streaming_output_and_the_error_stream(windows, winrm_host):
    path = await _upload(windows, "powershell", STREAMED_PS1)
    process = await windows.launch(INTERPRETERS["powershell"].plan(path, ["a b"]))
    assert isinstance(process, PowerShellProcess)
    assert winrm_host.open_shells()["psrp"] == 1  # the run's own runspace pool
    timed = await _timed_lines(process)
    assert await process.wait() == 4  # the script's `exit 4`, carried by the wrapper's [int] object
    by_stream = {stream: [line.text for _, line in timed if line.stream == stream] for stream in ("stdout", "stderr")}
    assert by_stream == {"stdout": ["arg[0]=a b", "first", "second"], "stderr": ["went wrong"]}  # error records: stderr
    arrival = {line.text: at for at, line in timed}
    assert arrival["second"] - arrival["first"] > 1.0, timed  # "first" came before the pause ended
    assert winrm_host.open_shells()["psrp"] == 0  # the runspace pool was closed after the run


async def test_a_terminating_error_in_a_ps1_gives_exit_code_1(windows):
    path = await _upload(windows, "powershell", "Write-Output 'before'\nthrow 'it broke'\nWrite-Output 'never'\n")
    process = await windows.launch(INTERPRETERS["powershell"].plan(path, []))
    lines = [(line.stream, line.text) async for line in process.lines()]
    assert await process.wait() == 1
    assert lines == [("stdout", "before"), ("stderr", "it broke")]


async def test_stop_of_a_psrp_pipeline_ends_the_run_and_closes_its_runspace_pool(windows, winrm_host):
    path = await _upload(windows, "powershell", "Write-Output 'started'\nStart-Sleep -Seconds 600\nWrite-Output 'too late'\n")
    process = await windows.launch(INTERPRETERS["powershell"].plan(path, [], run_id="ps-stop-test"))
    lines = process.lines()
    assert (await anext(lines)).text == "started"
    began = time.monotonic()
    await process.stop(grace_seconds=5)
    assert await asyncio.wait_for(process.wait(), 30) == 1  # a stopped pipeline reports 1, like taskkill /F
    assert time.monotonic() - began < 5, "the pipeline ignored the PowerShell stop signal"
    # nothing after the stop but PowerShell's PipelineStoppedException from the Stopped state
    assert [(line.stream, line.text) async for line in lines] == [("stderr", "The pipeline has been stopped.")]
    assert winrm_host.open_shells()["psrp"] == 0


@pytest.mark.parametrize("argument", ["%PATH%", "!x!", "a^b", 'say "hi"', "a&calc", "x|y", "(x)", "a\nb"])
async def test_arguments_cmd_cannot_carry_are_refused_before_anything_runs(windows, argument):
    with pytest.raises(InvalidInput, match="cmd.exe cannot pass on safely"):
        await windows.launch(INTERPRETERS["cmd"].plan("C:\\x.bat", ["ok", argument]))


async def test_bat_arguments_with_spaces_arrive_intact(windows):
    path = await _upload(windows, "cmd", "@echo off\necho [%~1] [%~2] [%~3]\n")
    process = await windows.launch(INTERPRETERS["cmd"].plan(path, ["a b", "", "c:\\dir with space\\x"]))
    texts = [line.text async for line in process.lines()]
    assert await process.wait() == 0
    assert texts == ["[a b] [] [c:\\dir with space\\x]"]


async def _nothing(*_: object) -> None:
    return None


# --------------------------------------------------------------------------- the run-script flow


def windows_block(host: Any, **overrides: Any) -> WindowsHost:
    values: dict[str, Any] = dict(address="127.0.0.1", port=host.port, username=host.username,
                                  password=host.password, auth="ntlm", operation_timeout=5)
    return WindowsHost(**{**values, **overrides})


@pytest.fixture
async def windows_host(prefect_server: Any, winrm_host: Any) -> str:
    """The name of a fresh WindowsHost block for the test host."""
    name = f"win-{uuid.uuid4().hex[:10]}"
    await hosts.add(name, windows_block(winrm_host))
    return name


@pytest.mark.parametrize("code", [3, 0])
async def test_run_script_flow_maps_the_bat_exit_code_to_the_state(catalog, windows_host, code):
    name = f"bat-{uuid.uuid4().hex[:10]}"
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="cmd", host=windows_host), content=STREAMED_BAT, author="tests")
    state = await run_script(script=name, args=[str(code)], return_state=True)
    if code:
        assert state.is_failed()
        assert state.message == f"{name} failed with exit code 3; last stderr: to-stderr "
    else:
        assert state.is_completed(), state.message
    with catalog.session() as session:
        record = get_run(session, str(state.state_details.flow_run_id))
    assert (record.exit_code, record.host) == (code, windows_host)
    assert "stdout: first" in (record.output_tail or "")


async def test_run_script_flow_maps_a_ps1_exit_code_and_error_stream_to_the_state(catalog, windows_host):
    name = f"ps1-{uuid.uuid4().hex[:10]}"
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="powershell", host=windows_host), content=STREAMED_PS1, author="tests")
    state = await run_script(script=name, args=[], return_state=True)
    assert state.is_failed()
    assert state.message == f"{name} failed with exit code 4; last stderr: went wrong"
    with catalog.session() as session:
        record = get_run(session, str(state.state_details.flow_run_id))
    assert record.exit_code == 4
    assert "stdout: second" in (record.output_tail or "")


async def test_stopping_a_worker_run_of_a_bat_ends_cancelled_and_kills_the_wine_tree(
    catalog, windows_host, winrm_host, prefect_worker
):
    name = f"bat-long-{uuid.uuid4().hex[:10]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="cmd", host=windows_host),
                      "@echo off\necho started\nping -n 1000 127.0.0.1\n", author="tests")
    run_id = await runs.start(catalog, name, trigger="cli", user="tests")
    deadline = time.monotonic() + 90
    while not any(b"ping" in _cmdline(pid) for pid in winrm_host.wine_processes()):
        assert time.monotonic() < deadline, "the .bat never started on the test host"
        await asyncio.sleep(0.3)
    before = winrm_host.wine_processes()
    assert await runs.stop(run_id) == "CANCELLING"
    result = await runs.wait(catalog, run_id, timeout=60, poll=0.2)
    assert result.state == "CANCELLED"
    deadline = time.monotonic() + 10
    while (left := [pid for pid in before if wine_alive(pid)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not left, f"Wine processes survived the stop: {left}"


def _cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


async def test_host_check_of_a_windows_host(windows_host):
    result = await hosts.check(windows_host)
    assert result.usable, result.problems
    assert result.uname and "windows" in result.uname.lower()  # what Wine's `ver` prints
    assert any("\\sms\\run" in note for note in result.notes)


async def test_host_check_reports_a_wrong_password(prefect_server, winrm_host):
    name = f"win-bad-{uuid.uuid4().hex[:8]}"
    await hosts.add(name, windows_block(winrm_host, password=SecretStr("wrong")))
    result = await hosts.check(name)
    assert not result.usable and result.reachable and not result.authenticated
    assert "refused the credentials" in result.problems[0]


async def test_windows_samples_appear_as_prefect_deployments(catalog, prefect_server):
    planned = await declarative.plan(catalog, REPO / "deployments" / "samples.yaml")
    await declarative.apply(catalog, planned, author="tests")
    async with get_client() as client:
        for sample, interpreter in (("cleanup-temp-powershell", "powershell"), ("service-check-bat", "cmd")):
            deployment = await client.read_deployment_by_name(deployment_name(sample))
            assert deployment.parameters["script"] == sample
            with catalog.session() as session:
                assert get_script(session, sample).interpreter == interpreter
