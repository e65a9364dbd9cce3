"""The transport contract's pure parts: each boundary's error table with the real exception types
of its libraries, the continuation marker of split lines, plans, and the POSIX launcher's done mark."""

from __future__ import annotations

import socket

import httpx
import paramiko
import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from sms_plugin.errors import (
    AuthenticationFailed,
    ErrorMap,
    HostKeyError,
    HostUnreachable,
    IncompatibleHost,
    InvalidInput,
    NotFound,
    ServiceError,
    TransportError,
)
from sms_plugin.execution import MESSAGE_CHARS, messages
from sms_plugin.limits import PREFECT_ERRORS
from sms_plugin.transports.base import CONTINUES, MAX_LINE_CHARS, LineSplitter, OutputLine, Plan, check_run_key
from sms_plugin.transports.interpreters import INTERPRETERS
from sms_plugin.transports.local import LOCAL_ERRORS
from sms_plugin.transports.posix import DoneMark, done_mark, render
from sms_plugin.transports.psrp import WinRMTarget, render as windows_render, winrm_errors
from sms_plugin.transports.ssh import ssh_errors

SERVER = ("10.0.0.5", 2222, 5.0, True)  # legacy: an algorithm mismatch does not probe the server
KEY, OTHER = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


def _mapped(table: ErrorMap, error: BaseException, what: str = "upload of x.sh") -> BaseException:
    with pytest.raises(Exception) as raised:
        with table.boundary(what):
            raise error
    assert raised.value is error or raised.value.__cause__ is error
    return raised.value


SSH_CASES = [
    (paramiko.BadHostKeyException("h", KEY, OTHER), False, HostKeyError, "has CHANGED"),
    (paramiko.AuthenticationException("no"), True, AuthenticationFailed, "ops@10.0.0.5:2222 refused the credentials: no"),
    (paramiko.IncompatiblePeer("no matching kex"), True, IncompatibleHost, "even with the legacy profile"),
    (socket.timeout("timed out"), True, HostUnreachable, "did not answer within 5 s"),
    (TimeoutError(), False, TransportError, "upload of x.sh on ops@10.0.0.5:2222 failed: the server did not answer"),
    (ConnectionRefusedError(111, "Connection refused"), True, HostUnreachable, "cannot connect to ops@10.0.0.5:2222"),
    (EOFError(), False, TransportError, "upload of x.sh on ops@10.0.0.5:2222 failed: connection closed"),
    (paramiko.SSHException("Unable to open channel."), False, TransportError, "failed: Unable to open channel."),
    (paramiko.ChannelException(2, "Connect failed"), False, TransportError, "upload of x.sh on"),
    (ConnectionResetError(104, "reset by peer"), False, TransportError, "reset by peer"),
    (paramiko.ssh_exception.NoValidConnectionsError({("10.0.0.5", 2222): ConnectionRefusedError(111, "refused")}), True,
     HostUnreachable, "ops@10.0.0.5:2222: the connection was refused (nothing listens on port 2222"),
    (paramiko.ssh_exception.NoValidConnectionsError({("10.0.0.5", 2222): OSError(113, "No route to host")}), True,
     HostUnreachable, "cannot connect to ops@10.0.0.5:2222: No route to host"),
]


@pytest.mark.parametrize(("error", "connecting", "kind", "message"), SSH_CASES, ids=lambda v: type(v).__name__)
def test_ssh_table_maps_each_paramiko_and_socket_error(error, connecting, kind, message):
    mapped = _mapped(ssh_errors("ops@10.0.0.5:2222", SERVER, connecting=connecting), error)
    assert type(mapped) is kind
    assert message in str(mapped)


async def test_a_refused_port_reads_alike_in_a_run_and_in_a_host_check():
    """One wording (sms_plugin/transports/unreachable.py): a run's SSH connection and `sms host check`'s
    port probe of a closed port say the same, no errno ("[Errno None] Unable to connect" before)."""
    from infra.testbed.ports import free_port
    from sms_plugin.host_kinds.checks import port_refusal

    port = free_port()
    checked = await port_refusal("127.0.0.1", port, 2)
    assert checked == f"cannot connect to 127.0.0.1:{port}: the connection was refused (nothing listens on port {port}, or a firewall rejects it)"
    refusal = paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", port): ConnectionRefusedError(111, "x")})
    assert str(_mapped(ssh_errors(f"127.0.0.1:{port}", ("127.0.0.1", port, 2.0, True), connecting=True), refusal)) == checked


def test_a_network_error_while_connecting_is_unreachable_later_a_failed_operation():
    error = paramiko.SSHException("Error reading SSH protocol banner")
    assert type(_mapped(ssh_errors("h", SERVER, connecting=True), error)) is HostUnreachable
    assert type(_mapped(ssh_errors("h", SERVER), error)) is TransportError


WINRM = WinRMTarget(address="w", username="u", password="p", auth="ntlm")
WINRM_CASES = [
    (AuthenticationError("401"), AuthenticationFailed, "u@http://w:5985 refused the credentials (ntlm)"),
    (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), HostUnreachable, "certificate not trusted"),
    (requests.exceptions.ConnectionError("refused"), HostUnreachable, "cannot reach u@http://w:5985"),
    (requests.exceptions.ReadTimeout("read timed out"), HostUnreachable, "cannot reach"),
    (WSManFaultError(2150858843, "w", "The shell was not found.", 0, "", ""), TransportError,
     "WinRM fault 2150858843: The shell was not found."),
    (WinRMTransportError("http", 500, "boom"), TransportError, "upload of x.sh on u@http://w:5985 failed"),
    (requests.exceptions.ChunkedEncodingError("cut"), TransportError, "failed: cut"),
]


@pytest.mark.parametrize(("error", "kind", "message"), WINRM_CASES, ids=lambda v: type(v).__name__)
def test_winrm_table_maps_each_pypsrp_and_requests_error(error, kind, message):
    mapped = _mapped(winrm_errors(WINRM), error)
    assert type(mapped) is kind
    assert message in str(mapped)


def test_local_table_maps_operating_system_errors():
    mapped = _mapped(LOCAL_ERRORS, PermissionError(13, "Permission denied"), "starting the script")
    assert type(mapped) is TransportError
    assert str(mapped) == "starting the script failed on the worker's machine: [Errno 13] Permission denied"


def test_prefect_table_maps_status_and_connection_errors_of_the_client():
    request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment-with-lease")
    status = httpx.HTTPStatusError("409", request=request, response=httpx.Response(409, text="in use", request=request))
    mapped = _mapped(PREFECT_ERRORS, status, "taking a slot of host:web-01")
    assert type(mapped) is ServiceError
    assert str(mapped) == "taking a slot of host:web-01: the Prefect API answered 409 (in use)"
    unreachable = _mapped(PREFECT_ERRORS, httpx.ConnectError("refused", request=request), "setting the limit host:a")
    assert type(unreachable) is ServiceError and "cannot reach the Prefect API (refused)" in str(unreachable)


@pytest.mark.parametrize("table", [ssh_errors("h", SERVER), winrm_errors(WINRM), LOCAL_ERRORS, PREFECT_ERRORS])
def test_sms_errors_pass_and_bugs_are_not_disguised(table):
    refusal = NotFound("no such run")
    assert _mapped(table, refusal) is refusal
    bug = KeyError("a bug, not a failure of the peer")
    assert _mapped(table, bug) is bug


# --------------------------------------------------------------------------- split lines


def test_a_10_mb_line_is_cut_into_marked_pieces_that_fit_one_message():
    line = "".join(chr(ord("a") + i % 26) for i in range(10 * 1024 * 1024))
    splitter = LineSplitter()
    chunks = [line[i : i + 65536].encode() for i in range(0, len(line), 65536)]
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.feed(b"\r\n") + splitter.flush()
    assert len(pieces) == 41
    assert all(piece.endswith(CONTINUES) for piece in pieces[:-1]) and not pieces[-1].endswith(CONTINUES)
    assert max(len(piece) for piece in pieces) == MAX_LINE_CHARS
    assert "".join(piece.removesuffix(CONTINUES) for piece in pieces) == line
    # fed in one go or byte by byte at the edges, the cuts are the same
    assert LineSplitter().feed(line.encode() + b"\n") == pieces
    assert [list(messages([OutputLine("stdout", piece)])) for piece in pieces[:2]] == [
        [("stdout", piece)] for piece in pieces[:2]
    ]
    assert MESSAGE_CHARS >= MAX_LINE_CHARS


def test_lines_up_to_the_limit_are_not_marked():
    exact = "x" * MAX_LINE_CHARS
    assert LineSplitter().feed(exact.encode() + b"\r\n") == [exact]
    splitter = LineSplitter()
    assert splitter.feed(exact.encode() + b"y") == []
    assert splitter.flush() == [exact[: MAX_LINE_CHARS - len(CONTINUES)] + CONTINUES, exact[-len(CONTINUES) :] + "y"]


# --------------------------------------------------------------------------- plans


def test_interpreters_make_plans_that_no_layer_parses_back():
    plan = INTERPRETERS["powershell"].plan("C:\\t\\x.ps1", ["a b"], env={"JOB": "1"}, run_id="r1")
    assert (plan.kind, plan.script, plan.args, plan.program) == ("powershell", "C:\\t\\x.ps1", ("a b",), ())
    assert windows_render(plan)[0] == "psrp"
    assert INTERPRETERS["original"].plan("D:\\jobs\\n.CMD", []).kind == "batch"
    assert INTERPRETERS["original"].plan("/opt/jobs/n.sh", []).kind == "program"
    with pytest.raises(InvalidInput, match="runs on Windows hosts only"):
        render(plan)
    with pytest.raises(InvalidInput, match="nothing to run"):
        Plan()
    with pytest.raises(InvalidInput, match="NUL|null"):
        Plan(program=("sh", "-c", "echo \0"))


@pytest.mark.parametrize("key", ["..", ".", "a/b", "a\\b", "", "-x" * 100])
def test_upload_folders_are_named_by_a_plain_run_key(key):
    with pytest.raises(InvalidInput):
        check_run_key(key)
    assert check_run_key("0b5c6f1e-3d1c-4a53-9a36-1f0b5b1c2d3e") == "0b5c6f1e-3d1c-4a53-9a36-1f0b5b1c2d3e"


def _through(mark: DoneMark, stream: bytes, cut: list[int]) -> bytes:
    """``stream`` read in pieces cut at ``cut``, then its end, through ``mark``."""
    bounds = [0, *cut, len(stream)]
    taken = [mark.take(stream[a:b], ended=False) for a, b in zip(bounds, bounds[1:])]
    return b"".join(taken) + mark.take(b"", ended=True)


@pytest.mark.parametrize("output", [b"", b"out\n", b"no newline", b"nul \0 inside\n", b"\0sms-done:other\n"])
def test_the_done_mark_is_taken_off_the_end_wherever_the_reads_cut_it(output):
    stream = output + done_mark("n0nce")
    for cut in range(len(stream) + 1):
        mark = DoneMark("n0nce")
        assert _through(mark, stream, [cut]) == output
        assert mark.take(b"", ended=True) == b"" and mark.seen  # asked again after the end


@pytest.mark.parametrize("stream", [
    b"out\n", b"ends in a nul \0", b"\0sms-done:", b"\0sms-done:n0nce", done_mark("other"),
    done_mark("n0nce") + b"more output", b"x" + done_mark("n0nce")[:-1],
])
def test_output_without_the_done_mark_at_its_end_arrives_whole(stream):
    for cut in range(len(stream) + 1):
        mark = DoneMark("n0nce")
        assert _through(mark, stream, [cut]) == stream
        assert not mark.seen


def test_output_is_held_back_only_while_it_may_be_the_start_of_the_done_mark():
    mark = DoneMark("n0nce")
    assert mark.take(b"line\n", ended=False) == b"line\n"
    assert mark.take(b"a\0b\n", ended=False) == b"a\0b\n"
    assert mark.take(b"c\0sms", ended=False) == b"c"
    assert mark.take(b"!\n", ended=False) == b"\0sms!\n"
