"""The local transport: runs scripts on the worker's own machine, no network involved.

Scripts get a small, clean environment (``PATH``, ``HOME``, ``LANG``... plus the script's own
variables), never the worker's: the worker's environment may hold database URLs and API keys.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from sms_plugin.errors import TransportError
from sms_plugin.transports.base import Command, RemoteProcess, Transport

_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")
_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "0": 0}


class LocalProcess(RemoteProcess):
    """A child process in a session of its own; its pid is its process group id."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(pid=process.pid)
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        self._pump_in_thread("stdout", process.stdout.read1)
        self._pump_in_thread("stderr", process.stderr.read1)
        self._supervise()

    async def _main_exit(self) -> int:
        code = await asyncio.to_thread(self._process.wait)
        return 128 - code if code < 0 else code

    async def _signal_group(self, signal_name: str) -> bool:
        try:
            os.killpg(self._process.pid, _SIGNALS[signal_name])
        except (ProcessLookupError, PermissionError):
            return False
        return True


class LocalTransport(Transport):
    """Runs commands as child processes of the worker, each in a new session.

    ``scratch`` is where uploaded scripts go (default: ``$SMS_HOME/run``).
    """

    def __init__(self, scratch: Path | None = None) -> None:
        if scratch is None:
            from sms_plugin.settings import sms_home

            scratch = sms_home() / "run"
        self._scratch = scratch

    async def scratch_dir(self) -> str:
        self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(self._scratch.resolve())

    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        target = Path(path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(content)

    async def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    async def start(self, command: Command) -> RemoteProcess:
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.update(command.env)
        try:
            process = subprocess.Popen(
                command.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=command.cwd,
                start_new_session=True,
            )
        except OSError as error:
            raise TransportError(f"the script could not be started: {error}") from None
        return LocalProcess(process)

    async def close(self) -> None:
        return None
