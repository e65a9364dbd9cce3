"""The local transport: runs scripts on the worker's own machine, no network involved.

Scripts get a small, clean environment (``PATH``, ``HOME``, ``LANG``... plus the script's own
variables), never the worker's: the worker's environment may hold database URLs and API keys.
Each run is a session of its own, marked with ``SMS_RUN_ID``; its state file lives in
``$SMS_HOME/state/<run id>`` while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from sms_plugin.errors import TransportError
from sms_plugin.transports.base import Command, RemoteProcess, Transport, in_thread
from sms_plugin.transports.posix import RUN_MARKER

_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")
_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "0": 0}


def _marked_pids(run_id: str) -> list[int]:
    """Processes whose environment carries the run's marker (Linux /proc)."""
    needle = f"{RUN_MARKER}={run_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member; zombies (dead, unreaped) do not count."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


class LocalProcess(RemoteProcess):
    """A child process in a session of its own; its pid is its process group id."""

    def __init__(self, process: subprocess.Popen[bytes], transport: LocalTransport, run_id: str | None) -> None:
        super().__init__(transport, run_id, pid=process.pid)
        self._process = process
        self._local = transport
        assert process.stdout is not None and process.stderr is not None
        self._pump_in_thread("stdout", process.stdout.read1)
        self._pump_in_thread("stderr", process.stderr.read1)
        self._supervise()

    async def _main_exit(self) -> int:
        code = await in_thread(self._process.wait)
        if self.run_id:
            await self._local.remove_state(self.run_id)
        return 128 - code if code < 0 else code


class LocalTransport(Transport):
    """Runs commands as child processes of the worker, each in a new session.

    ``scratch`` is where uploaded scripts go (default: ``$SMS_HOME/run``).
    """

    def __init__(self, scratch: Path | None = None) -> None:
        from sms_plugin.settings import sms_home

        self._scratch = scratch or sms_home() / "run"
        self._states = sms_home() / "state"

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
        if command.run_id:
            env[RUN_MARKER] = command.run_id
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
        if command.run_id:
            self._states.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self._states / command.run_id).write_text(f"{command.run_id} {process.pid} {int(time.time())}\n")
        return LocalProcess(process, self, command.run_id)

    async def signal_run(self, pgid: int | None, run_id: str | None, signal_name: str) -> bool:
        if signal_name == "0":
            return bool((pgid and _group_alive(pgid)) or (run_id and _marked_pids(run_id)))
        number = _SIGNALS[signal_name]
        found = False
        targets: list[tuple[object, int]] = [(os.killpg, pgid)] if pgid else []
        targets += [(os.kill, pid) for pid in (_marked_pids(run_id) if run_id else [])]
        for send, target in targets:
            try:
                send(target, number)  # type: ignore[operator]
                found = True
            except (ProcessLookupError, PermissionError):
                continue
        return found

    async def run_state(self, run_id: str) -> int | None:
        try:
            return int((self._states / run_id).read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None

    async def remove_state(self, run_id: str) -> None:
        (self._states / run_id).unlink(missing_ok=True)

    async def close(self) -> None:
        return None
