"""The Windows transport: WinRM (WS-Management) with pypsrp — PSRP pipelines and WinRS shells.

pypsrp carries authentication (Negotiate/NTLM, Kerberos, CredSSP, Basic over HTTPS), message
encryption over HTTP and certificate checks. This module uses two of its layers:

* ``.ps1`` scripts run in a **PSRP pipeline** (``RunspacePool`` + ``PowerShell``): a runspace
  pool of their own, one pipeline whose script (``windows_commands.run_script``) invokes the file
  with literal arguments; output objects arrive as lines of stdout, error records as lines of
  stderr, and the wrapper's last ``[int]`` object is the exit code;
* ``.bat``/``.cmd`` files and other programs run through ``cmd.exe /c`` in a **WinRS shell**
  (``WSMan`` + ``WinRS``), which gives native stdout/stderr bytes and the process's exit code;
  upload and remove are short ``powershell.exe -EncodedCommand`` commands in a WinRS utility shell.

How old WinRM limits are handled:

* each script runs in a WinRS shell or runspace pool of its own, started on a connection of its
  own; killing a cmd.exe run signals ``terminate`` and deletes the shell — Windows then ends every
  process of the shell (WinRS keeps a shell's processes in one job object), so the whole process
  tree goes; killing a .ps1 run stops its pipeline and deletes its runspace pool;
* short commands (temp folder, upload, remove) share a utility shell that is replaced before it
  has started ``commands_per_shell`` commands (``MaxProcessesPerShell``: 15 on Windows 2008 R2);
* a Receive that sees no output within ``operation_timeout`` ends with a WS-Management TimedOut
  fault, which is the normal keep-alive of a quiet command: the next Receive is sent at once, so
  a script can run for hours. Each Receive also resets the shell's idle timer; if SMS dies, the
  shell's ``idle_timeout`` makes Windows delete it and end its processes.

Example::

    async with await WindowsTransport.connect(WinRMTarget("10.0.0.7", username="ops", password=pw)) as win:
        process = await win.launch(INTERPRETERS["original"].plan("C:\\\\jobs\\\\nightly.bat", []))

Errors: every pypsrp and requests error is mapped once, by :func:`winrm_errors`. Runs are not
re-found from another connection (no ``RunRecovery``): a crashed worker's shell is deleted by
Windows after ``idle_timeout``, with its processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import SignalCode, WinRS
from pypsrp.wsman import WSMan

from sms_plugin.errors import AuthenticationFailed, ErrorMap, HostUnreachable, InvalidInput, TransportError
from sms_plugin.transports import windows_commands
from sms_plugin.transports.base import LineSplitter, Plan, RemoteProcess, SecretsMasked, Stream, Transport, in_thread

Auth = Literal["negotiate", "ntlm", "kerberos", "basic", "credssp"]
Encryption = Literal["auto", "always", "never"]
TIMED_OUT = 2150858793
UPLOAD_CHUNK_BYTES = 48 * 1024
"""Raw bytes per Send (about 87 KB on the wire, under WinRM 2.0's 150 KB MaxEnvelopeSizekb)."""
UTF8_CODEPAGE = 65001
_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
KILLED_EXIT_CODE = 1
"""What a killed command reports, like ``taskkill /F``."""

T = TypeVar("T")


@dataclass(frozen=True, repr=False)
class WinRMTarget(SecretsMasked):
    """Everything needed to reach one Windows server over WinRM."""

    SECRETS = frozenset({"password"})

    address: str
    username: str
    password: str
    port: int | None = None
    """None: 5985 for http, 5986 for https."""
    scheme: Literal["http", "https"] = "http"
    auth: Auth = "negotiate"
    cert_validation: bool = True
    ca_path: str | None = None
    encryption: Encryption = "auto"
    operation_timeout: int = 20
    connect_timeout: float = 10.0
    commands_per_shell: int = 15
    idle_timeout: int = 900
    """Seconds a shell outlives a silent client (a crashed SMS) before Windows deletes it."""

    def __post_init__(self) -> None:
        if self.auth == "basic" and self.scheme != "https":
            raise InvalidInput("Basic authentication sends the password in clear: use it over https only")
        if self.commands_per_shell < 2:
            raise InvalidInput("commands_per_shell must be at least 2")

    @property
    def endpoint_port(self) -> int:
        """The port WinRM listens on: the given one, else 5985 for http and 5986 for https."""
        return self.port or (5986 if self.scheme == "https" else 5985)

    @property
    def label(self) -> str:
        return f"{self.username}@{self.scheme}://{self.address}:{self.endpoint_port}"

    def wsman(self) -> WSMan:
        """A pypsrp WSMan client (it connects on its first request)."""
        validation: bool | str = (self.ca_path or True) if self.cert_validation else False
        return WSMan(
            self.address,
            port=self.endpoint_port,
            username=self.username,
            password=self.password,
            ssl=self.scheme == "https",
            auth=self.auth,
            cert_validation=validation,
            encryption=self.encryption,
            operation_timeout=self.operation_timeout,
            connection_timeout=int(self.connect_timeout),
            read_timeout=self.operation_timeout + 10,
        )


def winrm_errors(target: WinRMTarget) -> ErrorMap:
    """The Windows transport's one error table: pypsrp and requests errors as SMS errors."""
    where = target.label
    return ErrorMap(
        (AuthenticationError, lambda error, what: AuthenticationFailed(f"{where} refused the credentials ({target.auth})")),
        (requests.exceptions.SSLError, lambda error, what: HostUnreachable(
            f"{where}: TLS certificate not trusted or invalid ({error.__context__ or error}); give the server's CA with ca_path"
        )),
        ((requests.exceptions.ConnectionError, requests.exceptions.Timeout),
         lambda error, what: HostUnreachable(f"cannot reach {where}: {error}")),
        (WSManFaultError, lambda error, what: TransportError(
            f"{what} on {where} failed: WinRM fault {error.code}: {error.reason}"
        )),
        ((WinRMError, requests.exceptions.RequestException),
         lambda error, what: TransportError(f"{what} on {where} failed: {error}")),
    )


def _call(target: WinRMTarget, what: str, call: Callable[[], T]) -> T:
    """Runs a pypsrp call, turning its errors into SMS's."""
    with winrm_errors(target).boundary(what):
        return call()


def _open_shell(wsman: WSMan, target: WinRMTarget, env: dict[str, str] | None = None, cwd: str | None = None) -> WinRS:
    shell = WinRS(wsman, codepage=UTF8_CODEPAGE, environment=env or None, working_directory=cwd,
                  idle_time_out=target.idle_timeout)
    _call(target, "opening a shell", shell.open)
    return shell


def _start_command(shell: WinRS, line: str, target: WinRMTarget) -> str:
    """Starts ``line`` in ``shell``; returns the command id."""
    response = _call(target, "starting a command", lambda: shell.command(line, None))
    command_id = response.findtext(f"{{{_RSP}}}CommandResponse/{{{_RSP}}}CommandId")
    if not command_id:
        raise TransportError(f"{target.label} did not return a command id")
    return command_id


def _receive(shell: WinRS, command_id: str, target: WinRMTarget) -> tuple[bool, int | None, bytes, bytes]:
    """One Receive: (done, exit code, stdout, stderr); a TimedOut fault is an empty answer."""
    try:
        state, code, buffers = shell.receive("stdout stderr", command_id)
    except WSManFaultError as error:
        if error.code == TIMED_OUT:
            return False, None, b"", b""
        raise
    return state.endswith("/Done"), code, buffers.get("stdout", b""), buffers.get("stderr", b"")


class _UtilityShell:
    """A shell for short commands, replaced before it reaches the per-shell command quota."""

    def __init__(self, target: WinRMTarget) -> None:
        self.target = target
        self.wsman = target.wsman()
        self._shell: WinRS | None = None
        self._used = 0
        self.lock = threading.Lock()
        self.shells_opened = 0

    def _current(self) -> WinRS:
        if self._shell is None or self._used >= self.target.commands_per_shell:
            self.close()
            self._shell = _open_shell(self.wsman, self.target)
            self._used = 0
            self.shells_opened += 1
        return self._shell

    def run(self, line: str, stdin: list[bytes] | None = None) -> tuple[int, bytes, bytes]:
        """Runs ``line`` to its end (feeding ``stdin`` pieces); exit code, stdout, stderr."""
        with self.lock:
            shell = self._current()
            self._used += 1
            command_id = _start_command(shell, line, self.target)
            for piece in stdin or []:
                _call(self.target, "sending input", lambda p=piece: shell.send("stdin", p, command_id=command_id))
            if stdin is not None:
                _call(self.target, "sending input", lambda: shell.send("stdin", b"\r\n", command_id=command_id, end=True))
            out, err = bytearray(), bytearray()
            while True:
                done, code, more_out, more_err = _call(self.target, "receiving output", lambda: _receive(shell, command_id, self.target))
                out += more_out
                err += more_err
                if done:
                    return code or 0, bytes(out), bytes(err)

    def close(self) -> None:
        if self._shell is not None:
            shell, self._shell = self._shell, None
            with contextlib.suppress(*winrm_errors(self.target).caught):
                shell.close()  # if already gone: Windows deletes idle shells itself


Received = tuple[bool, int | None, bytes, bytes]
"""One Receive: (done, exit code, stdout, stderr)."""


class WindowsProcess(RemoteProcess):
    """A command in a WinRS shell of its own; output is pumped by one Receive loop in a thread.

    Stopping it sends Ctrl+C, then ``terminate``, then deletes the shell.
    """

    stop_signals: tuple[str, ...] = (SignalCode.CTRL_C, SignalCode.TERMINATE)

    def __init__(self, transport: WindowsTransport, shell: WinRS, command_id: str, run_id: str | None) -> None:
        super().__init__(transport, run_id)
        self.shell = shell
        self.command_id = command_id
        self.receives = 0
        """How many Receive operations this command took (for tests and logs)."""
        self._killed = False
        self._ended = threading.Event()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._start_pump()
        self._supervise()

    @property
    def running(self) -> bool:
        return not self._ended.is_set()

    def _receive_once(self, target: WinRMTarget) -> Received:
        return _receive(self.shell, self.command_id, target)

    def _finish(self) -> None:
        """After the last Receive, in the pump thread: closes the run's own connection (the shell
        is deleted over the control one)."""
        self.shell.wsman.close()

    def _start_pump(self) -> None:
        loop = asyncio.get_running_loop()
        target: WinRMTarget = self.transport.target  # type: ignore[attr-defined]

        def publish(stream: Stream, lines: list[str]) -> None:
            asyncio.run_coroutine_threadsafe(self._publish(stream, lines), loop).result()

        def pump() -> None:
            splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
            outcome: int | BaseException
            try:
                while True:
                    done, code, out, err = self._receive_once(target)
                    self.receives += 1
                    for stream, data in (("stdout", out), ("stderr", err)):
                        if data:
                            publish(stream, splitters[stream].feed(data))  # type: ignore[arg-type]
                    if done:
                        outcome = KILLED_EXIT_CODE if self._killed else (code or 0)
                        break
            except Exception as error:  # noqa: BLE001 - handed to wait()
                mapped = winrm_errors(target).translate(error, "receiving output")
                outcome = KILLED_EXIT_CODE if self._killed else mapped or error
            self._finish()
            for stream, splitter in splitters.items():
                publish(stream, splitter.flush())  # type: ignore[arg-type]
            self._ended.set()
            loop.call_soon_threadsafe(self._settle, outcome)
            for _ in range(2):
                asyncio.run_coroutine_threadsafe(self._close_stream(), loop).result()

        threading.Thread(target=pump, name=f"sms-winrm-{self.command_id[:8]}", daemon=True).start()

    def _settle(self, outcome: int | BaseException) -> None:
        if self._exit.done():
            return
        if isinstance(outcome, BaseException):
            self._exit.set_exception(outcome)
        else:
            self._exit.set_result(outcome)

    async def _main_exit(self) -> int:
        return await asyncio.shield(self._exit)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """The first stop signal, then after ``grace_seconds`` the others, then the shell is
        deleted: Windows ends every process of the shell (its job object), the script's tree."""
        transport: WindowsTransport = self.transport  # type: ignore[assignment]
        first, *others = self.stop_signals
        if not self._ended.is_set():
            self._killed = True
            await transport.on_control(self, lambda shell: shell.signal(first, self.command_id))
            await in_thread(lambda: self._ended.wait(grace_seconds))
        for code in others:
            if not self._ended.is_set():
                await transport.on_control(self, lambda shell, code=code: shell.signal(code, self.command_id))
        await transport.on_control(self, lambda shell: shell.close())


class PowerShellProcess(WindowsProcess):
    """A .ps1 run in a PSRP pipeline of a runspace pool of its own (pypsrp's ``RunspacePool`` and
    ``PowerShell``); output objects are lines of stdout, error records lines of stderr, and the
    wrapper's last ``[int]`` output is the exit code (see ``windows_commands.run_script``).

    Stopping it sends the PowerShell stop signal (``powershell/signal/crtl_c``), then deletes the
    runspace pool (its ``wsmprovhost.exe`` on Windows).
    """

    stop_signals = (SignalCode.PS_CTRL_C,)

    def __init__(self, transport: WindowsTransport, pool: RunspacePool, pipeline: PowerShell, run_id: str | None) -> None:
        self.pool = pool
        self.pipeline = pipeline
        self._seen_output = 0
        self._seen_errors = 0
        self._exit_code: int | None = None
        super().__init__(transport, pool.shell, pipeline.id, run_id)

    def _receive_once(self, target: WinRMTarget) -> Received:
        self.pipeline.poll_invoke()  # a TimedOut fault is an empty answer here too
        out, err = [], []
        for value in self.pipeline.output[self._seen_output :]:
            if isinstance(value, int) and not isinstance(value, bool):
                self._exit_code = value  # the wrapper's exit code object
            else:
                out.append(str(value))
        for record in self.pipeline.streams.error[self._seen_errors :]:
            err.append(_error_text(record))
        self._seen_output, self._seen_errors = len(self.pipeline.output), len(self.pipeline.streams.error)
        state = self.pipeline.state
        done = state != PSInvocationState.RUNNING
        code = self._exit_code if state == PSInvocationState.COMPLETED and self._exit_code is not None else 1
        return done, code if done else None, _lines_bytes(out), _lines_bytes(err)

    def _finish(self) -> None:
        """Closes the runspace pool (a Delete) on the run's own connection, then the connection."""
        target: WinRMTarget = self.transport.target  # type: ignore[attr-defined]
        with contextlib.suppress(*winrm_errors(target).caught):
            self.pool.close()  # unless a stop already deleted it over the control connection
        self.shell.wsman.close()


def _error_text(record: Any) -> str:
    """An error record as one line of stderr: what PowerShell's ToString gives, else the message."""
    text = str(record)
    if not text and getattr(record, "exception", None) is not None:
        text = str(getattr(record.exception, "message", "") or "")
    return text


def _lines_bytes(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


class WindowsTransport(Transport):
    """One host: a control connection (utility shell, signals) plus one connection per run."""

    def __init__(self, target: WinRMTarget) -> None:
        self.target = target
        self.utility = _UtilityShell(target)
        self._scratch: str | None = None

    @classmethod
    async def connect(cls, target: WinRMTarget) -> WindowsTransport:
        """Logs in (by opening the utility shell); AuthenticationFailed / HostUnreachable if not."""
        transport = cls(target)
        await asyncio.to_thread(lambda: transport.utility._current())
        return transport

    async def _run(self, line: str, stdin: list[bytes] | None = None) -> tuple[int, bytes, bytes]:
        return await asyncio.to_thread(self.utility.run, line, stdin)

    async def scratch_dir(self) -> str:
        if self._scratch is None:
            code, out, err = await self._run(windows_commands.TEMP_DIR)
            temp = out.decode("utf-8", errors="replace").strip()
            if code != 0 or not temp or "%" in temp:
                raise TransportError(f"cannot find the temp folder on {self.target.label}: {err.decode(errors='replace')}")
            self._scratch = temp.rstrip("\\") + "\\sms\\run"
        return self._scratch

    async def windows_version(self) -> str:
        """What ``ver`` prints (e.g. "Microsoft Windows [Version 6.1.7601]")."""
        code, out, err = await self._run(windows_commands.VERSION)
        if code != 0:
            raise TransportError(f"`ver` failed on {self.target.label}: {err.decode(errors='replace').strip()}")
        return out.decode("utf-8", errors="replace").strip()

    def join(self, folder: str, name: str) -> str:
        return f"{folder.rstrip(chr(92))}\\{name}"

    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        """Sends ``content`` in base64 chunks on stdin and compares the SHA-256 the server computed."""
        chunks = [base64.b64encode(content[i : i + UPLOAD_CHUNK_BYTES]) + b"\r\n" for i in range(0, len(content), UPLOAD_CHUNK_BYTES)]
        code, out, err = await self._run(windows_commands.upload(path), chunks)
        expected = hashlib.sha256(content).hexdigest()
        got = out.decode("utf-8", errors="replace").strip().lower()
        if code != 0 or got != expected:
            detail = err.decode("utf-8", errors="replace").strip()[-300:] or f"checksum {got or 'missing'} != {expected}"
            raise TransportError(f"upload of {path} to {self.target.label} failed: {detail}")

    async def remove(self, path: str) -> None:
        await self._run(windows_commands.remove(path))

    async def launch(self, plan: Plan) -> RemoteProcess:
        kind, text = render(plan)
        wsman = self.target.wsman()
        if kind == "psrp":

            def begin_pipeline() -> tuple[RunspacePool, PowerShell]:
                pool = RunspacePool(wsman, idle_timeout=self.target.idle_timeout)
                _call(self.target, "opening a runspace pool", pool.open)
                pipeline = PowerShell(pool)
                pipeline.add_script(text)
                try:
                    _call(self.target, "starting a pipeline", pipeline.begin_invoke)
                except TransportError:
                    with contextlib.suppress(*winrm_errors(self.target).caught):
                        pool.close()
                    raise
                return pool, pipeline

            pool, pipeline = await asyncio.to_thread(begin_pipeline)
            return PowerShellProcess(self, pool, pipeline, plan.run_id)

        def begin() -> tuple[WinRS, str]:
            shell = _open_shell(wsman, self.target, plan.env, plan.cwd)
            return shell, _start_command(shell, text, self.target)

        shell, command_id = await asyncio.to_thread(begin)
        return WindowsProcess(self, shell, command_id, plan.run_id)

    async def on_control(self, process: WindowsProcess, action: Callable[[WinRS], object]) -> None:
        """Runs ``action`` on the process's shell over the control connection (the run's own
        connection may be blocked in a Receive); a shell or command already gone is no error."""

        def call() -> None:
            shell = copy.copy(process.shell)  # same shell id and selectors, other connection
            shell.wsman = self.utility.wsman
            with self.utility.lock, contextlib.suppress(*winrm_errors(self.target).caught):
                action(shell)

        await asyncio.to_thread(call)

    async def close(self) -> None:
        await asyncio.to_thread(self.utility.close)
        self.utility.wsman.close()


def render(plan: Plan) -> tuple[Literal["psrp", "winrs"], str]:
    """How a plan runs: ("psrp", pipeline script) or ("winrs", cmd.exe line).

    PowerShell plans run in a PSRP pipeline (see :func:`windows_commands.run_script`); batch
    and program plans through cmd.exe in a WinRS shell, whose argument rules apply (InvalidInput
    for what it cannot carry).
    """
    if plan.kind == "powershell":
        assert plan.script is not None  # a Plan checks it
        return "psrp", windows_commands.run_script(plan.script, list(plan.args), plan.env, plan.cwd)
    return "winrs", windows_commands.cmd_line(plan.argv)
