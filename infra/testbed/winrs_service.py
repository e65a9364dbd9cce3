"""WinRS shells and commands of the loopback WinRM test host ([MS-WSMV] 3.1.4.1.x).

A shell is a folder of commands; each command is a :class:`Job`: a Wine ``cmd.exe`` process tree
in a Linux process group of its own (see :mod:`infra.testbed.wine`), or one of the few
PowerShell commands the SMS transport sends, answered by :mod:`infra.testbed.powershell_stub`.

Old-WinRM limits enforced like Windows Server 2008 R2 / WinRM 2.0:

* at most ``commands_per_shell`` commands (processes) per shell over its lifetime
  (``MaxProcessesPerShell``, 15 there): the next Command gets a WS-Management fault;
* a Receive waits at most the request's ``OperationTimeout`` for output, then answers with the
  ``w:TimedOut`` fault (code 2150858793), which clients answer with a new Receive;
* a shell that sees no request for its ``IdleTimeOut`` is deleted with its processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from infra.testbed import wine
from infra.testbed.idle_expiry import start_expiry

TIMED_OUT = 2150858793
SHELL_NOT_FOUND = 2150858843
QUOTA_EXCEEDED = 2150859174
_DEFAULT_IDLE_SECONDS = 180.0


class WinRSFault(Exception):
    """Answered as a WS-Management fault with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Job(Protocol):
    """A running command: pipes, exit code, and a kill of everything it started."""

    stdin: object
    stdout: object
    stderr: object

    def wait(self) -> int: ...

    def end(self, sig: signal.Signals) -> None: ...


class WineJob:
    """A command line run by Wine's ``cmd.exe``; ``end`` signals its whole process group."""

    def __init__(self, line: str, workdir: Path, env: dict[str, str]) -> None:
        self.popen: subprocess.Popen[bytes] = wine.start_cmd(line, workdir, env)
        self.stdin, self.stdout, self.stderr = self.popen.stdin, self.popen.stdout, self.popen.stderr
        self.pgid = self.popen.pid

    def wait(self) -> int:
        return self.popen.wait()

    def end(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Command:
    """One command's output buffers and state, filled by two reader threads."""

    id: str
    job: Job
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)
    open_streams: int = 2

    def start_readers(self) -> None:
        for name in ("stdout", "stderr"):
            threading.Thread(target=self._read, args=(name,), daemon=True).start()

    def _read(self, name: str) -> None:
        source = getattr(self.job, name)
        buffer = getattr(self, name)
        while chunk := os.read(source.fileno(), 65536):
            with self.changed:
                buffer.extend(chunk)
                self.changed.notify_all()
        code = self.job.wait() if name == "stdout" else None
        with self.changed:
            self.open_streams -= 1
            if code is not None:
                self.exit_code = code
            self.changed.notify_all()

    @property
    def done(self) -> bool:
        return self.open_streams == 0 and self.exit_code is not None

    def receive(self, timeout: float) -> tuple[bytes, bytes, int | None]:
        """Output so far (taken off the buffers) and the exit code once everything was read.

        Waits up to ``timeout`` for anything to report, then raises the TimedOut fault.
        """
        with self.changed:
            if not self.changed.wait_for(lambda: self.stdout or self.stderr or self.done, timeout):
                raise WinRSFault(TIMED_OUT, "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.")
            out, err = bytes(self.stdout), bytes(self.stderr)
            self.stdout.clear()
            self.stderr.clear()
            return out, err, self.exit_code if self.done else None


@dataclass
class Shell:
    id: str
    env: dict[str, str]
    workdir: Path
    idle_seconds: float
    commands: dict[str, Command] = field(default_factory=dict)
    started: int = 0
    last_used: float = field(default_factory=time.monotonic)

    def kill_all(self) -> None:
        for command in self.commands.values():
            command.job.end(signal.SIGKILL)


class WinRSService:
    """All shells of one test host."""

    def __init__(self, root: Path, commands_per_shell: int, stub_factory: Callable[[str], Job | None]) -> None:
        """``stub_factory`` answers the command lines that are not for cmd.exe (PowerShell)."""
        self.root = root
        self.commands_per_shell = commands_per_shell
        self._stub_factory = stub_factory
        self._shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        start_expiry(self._lock, self._shells, lambda item: item.kill_all())

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._shells)

    def _shell(self, shell_id: str) -> Shell:
        with self._lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise WinRSFault(SHELL_NOT_FOUND, f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found on the server.")
        shell.last_used = time.monotonic()
        return shell

    def create(self, env: dict[str, str], idle_seconds: float | None) -> str:
        shell_id = str(uuid.uuid4()).upper()
        workdir = self.root / shell_id
        workdir.mkdir(parents=True)
        shell = Shell(shell_id, env, workdir, idle_seconds or _DEFAULT_IDLE_SECONDS)
        with self._lock:
            self._shells[shell_id] = shell
        return shell_id

    def command(self, shell_id: str, line: str) -> str:
        shell = self._shell(shell_id)
        if shell.started >= self.commands_per_shell:
            raise WinRSFault(QUOTA_EXCEEDED, f"The WS-Management service cannot process the request: this shell may start at most {self.commands_per_shell} processes (MaxProcessesPerShell).")
        shell.started += 1
        job = self._stub_factory(line) or WineJob(line, shell.workdir, shell.env)
        command = Command(str(uuid.uuid4()).upper(), job)
        shell.commands[command.id] = command
        command.start_readers()
        return command.id

    def _command(self, shell_id: str, command_id: str) -> Command:
        command = self._shell(shell_id).commands.get(command_id)
        if command is None:
            raise WinRSFault(SHELL_NOT_FOUND, f"no command {command_id} in shell {shell_id}")
        return command

    def receive(self, shell_id: str, command_id: str, timeout: float) -> tuple[bytes, bytes, int | None]:
        return self._command(shell_id, command_id).receive(timeout)

    def send(self, shell_id: str, command_id: str, data: bytes, end: bool) -> None:
        stdin = self._command(shell_id, command_id).job.stdin
        try:
            stdin.write(data)  # type: ignore[attr-defined]
            stdin.flush()  # type: ignore[attr-defined]
            if end:
                stdin.close()  # type: ignore[attr-defined]
        except (BrokenPipeError, ValueError):
            pass  # the command ended already: Windows drops the input too

    def signal(self, shell_id: str, command_id: str, code: str) -> None:
        job = self._command(shell_id, command_id).job
        job.end(signal.SIGINT if code.endswith("ctrl_c") else signal.SIGKILL)

    def delete(self, shell_id: str) -> None:
        shell = self._shell(shell_id)
        with self._lock:
            self._shells.pop(shell_id, None)
        shell.kill_all()
