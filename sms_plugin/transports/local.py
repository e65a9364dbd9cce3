"""The local transport: runs scripts on the worker's own machine, no network involved.

Scripts get a small, clean environment (``PATH``, ``HOME``, ``LANG``... plus the script's own
variables), never the worker's: the worker's environment may hold database URLs and API keys.
With an :class:`Account` (what the ``LocalHost`` block gives), scripts run as that account (its
uid, gid and groups), in its private folder ``~/.sms/run`` (uploads and working folder), with
its ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL``: another uid cannot read the worker's
``/proc/<pid>/environ`` or its files. Root is refused unless explicitly allowed.
Each run is a session of its own, marked with ``SMS_RUN_ID``; its state file lives in
``$SMS_HOME/state/<run id>`` while it runs.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sms_plugin.errors import ErrorMap, TransportError
from sms_plugin.transports.base import Plan, RemoteProcess, Transport, in_thread
from sms_plugin.transports.posix import RUN_MARKER, program_argv
from sms_plugin.transports.recovery import GroupProcess, RunRecovery, Signal

_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")
#: What a script running as an :class:`Account` keeps of the worker's environment (the rest is the account's).
_SYSTEM_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "0": 0}

LOCAL_ERRORS = ErrorMap(
    (OSError, lambda error, what: TransportError(f"{what} failed on the worker's machine: {error}")),
)
"""The local transport's one error table: the operating system's errors as TransportError."""


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


@dataclass(frozen=True)
class Account:
    """The account local scripts run as: ``Account.named("sms-run")``."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @classmethod
    def named(cls, name: str, *, allow_root: bool = False) -> Account:
        """The account ``name``; TransportError if it does not exist, or is root without ``allow_root``."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise TransportError(
                f"local scripts run as {name!r}, but the worker's machine has no such account: create it "
                f"(useradd --system --create-home --home-dir /var/lib/{name} --shell /usr/sbin/nologin {name}) "
                "or change the host's run_as"
            ) from None
        if entry.pw_uid == 0 and not allow_root:
            raise TransportError(
                f"refusing to run local scripts as {name!r} (uid 0): set the host's run_as to an unprivileged "
                "account, or allow_root if scripts must control the worker's machine"
            )
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return cls(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, entry.pw_shell)

    @property
    def is_worker(self) -> bool:
        """Whether this is the worker's own account (nothing to switch)."""
        return self.uid == os.geteuid()

    def environment(self) -> dict[str, str]:
        """The identity part of a script's environment."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}

    def own(self, path: Path) -> None:
        """Give ``path`` to this account (the worker creates it, the script uses it)."""
        if not self.is_worker:
            os.chown(path, self.uid, self.gid)


class LocalProcess(GroupProcess):
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
            await self._local.forget_run(self.run_id)
        return 128 - code if code < 0 else code


class LocalTransport(Transport, RunRecovery):
    """Runs commands as child processes of the worker, each in a new session.

    ``scratch`` is where uploaded scripts go (default: ``~/.sms/run`` of ``account``, else
    ``$SMS_HOME/run``); ``account`` is who runs them (default: the worker itself).
    """

    def __init__(self, scratch: Path | None = None, account: Account | None = None) -> None:
        from sms_plugin.settings import sms_home

        self._account = account
        self._private = scratch is None and account is not None
        self._scratch = scratch or (Path(account.home) / ".sms" / "run" if account else sms_home() / "run")
        self._states = sms_home() / "state"

    async def scratch_dir(self) -> str:
        account = self._account
        if self._private and account is not None and not Path(account.home).is_dir():
            raise TransportError(f"account {account.name!r} has no home folder {account.home}; create it or set scratch_dir")
        with LOCAL_ERRORS.boundary("creating the scratch folder"):
            for folder in [self._scratch.parent, self._scratch] if self._private else [self._scratch]:
                self._make_folder(folder)
            return str(self._scratch.resolve())

    def _make_folder(self, folder: Path) -> None:
        """Creates ``folder`` (private) if missing and gives it to the account."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._account is not None:
            self._account.own(folder)

    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        target = Path(path)
        with LOCAL_ERRORS.boundary(f"upload of {path}"):
            self._make_folder(target.parent)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            if self._account is not None:
                self._account.own(target)

    async def remove(self, path: str) -> None:
        target = Path(path)
        with LOCAL_ERRORS.boundary(f"removing {path}"):
            if target.is_dir() and not target.is_symlink():
                for entry in target.iterdir():
                    entry.unlink()
                target.rmdir()
            else:
                target.unlink(missing_ok=True)

    async def launch(self, plan: Plan) -> RemoteProcess:
        argv = program_argv(plan)
        account = self._account
        if account is None:
            env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        else:
            if not account.is_worker and os.geteuid() != 0:
                raise TransportError(
                    f"the worker runs as uid {os.geteuid()} and cannot start scripts as {account.name!r}: "
                    "run the worker as root, or set the host's run_as to the worker's own account"
                )
            env = {k: os.environ[k] for k in _SYSTEM_ENV if k in os.environ} | account.environment()
        env.update(plan.env)
        if plan.run_id:
            env[RUN_MARKER] = plan.run_id
        switch = account is not None and not account.is_worker
        cwd = plan.cwd or (await self.scratch_dir() if account else None)
        with LOCAL_ERRORS.boundary("starting the script"):
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                user=account.uid if switch else None,
                group=account.gid if switch else None,
                extra_groups=list(account.groups) if switch else None,
            )
            if plan.run_id:
                self._states.mkdir(mode=0o700, parents=True, exist_ok=True)
                (self._states / plan.run_id).write_text(f"{plan.run_id} {process.pid} {int(time.time())}\n")
        return LocalProcess(process, self, plan.run_id)

    async def signal_run(self, pgid: int | None, run_id: str | None, signal_name: Signal) -> bool:
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

    async def recorded_group(self, run_id: str) -> int | None:
        try:
            return int((self._states / run_id).read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None

    async def forget_run(self, run_id: str) -> None:
        with LOCAL_ERRORS.boundary(f"removing the state of run {run_id}"):
            (self._states / run_id).unlink(missing_ok=True)

    async def close(self) -> None:
        return None
