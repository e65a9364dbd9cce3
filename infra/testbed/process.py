"""Start, watch and stop the child processes of the test bed.

Every peer (MariaDB, sshd, Prefect server and worker) is one long-running child process with a
private temp folder. :class:`Peer` holds what they share: start with a readiness check and a
timeout, an error that carries the log tail, and a stop that ends only the processes we started
(the child, its process group and its descendants): SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

#: Keep the temp folders of stopped peers (for debugging) when this variable is set to 1.
KEEP_ENV = "SMS_TESTBED_KEEP"

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class PeerError(RuntimeError):
    """A peer could not be started; ``reason`` is one line, ``log_tail`` its last log lines."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail

    def __str__(self) -> str:
        if not self.log_tail:
            return self.reason
        return f"{self.reason}\n--- log tail ---\n{self.log_tail}"


def find_binary(name: str) -> str:
    """Absolute path of executable ``name`` (PATH, then the sbin folders) or :class:`PeerError`."""
    if os.path.isabs(name):
        if os.access(name, os.X_OK):
            return name
        raise PeerError(f"{name} not found")
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    found = shutil.which(name, path=path)
    if found is None:
        raise PeerError(f"{name} not found in PATH or {', '.join(_SBIN)}")
    return found


def run(
    argv: Sequence[str], *, input: str | None = None, timeout: float = 60, check: bool = True
) -> str:
    """Run a short command (``argv[0]`` looked up with :func:`find_binary`) and return its
    stdout; with ``check``, a non-zero exit raises :class:`PeerError` carrying its output."""
    argv = [find_binary(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if check and done.returncode != 0:
        raise PeerError(
            f"`{' '.join(argv)}` exited with code {done.returncode}",
            (done.stdout + done.stderr).strip(),
        )
    return done.stdout


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group id) for every process, read from /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def process_tree(root: int) -> set[int]:
    """``root``, its descendants and the members of its process group (which it leads)."""
    table = _process_table()
    found = {pid for pid, (_, pgid) in table.items() if pgid == root}
    found.add(root)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of ``pids`` so far, with that of their children that have ended."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ManagedProcess:
    """One long-running child in its own session, stdout and stderr appended to ``log_path``."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        """Spawn the process (does not wait for it to be ready)."""
        self._log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise PeerError(f"`{' '.join(self.argv)}` could not be spawned: {exc}") from exc

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready()`` until it returns True; :class:`PeerError` if the process dies first,
        or after ``timeout`` seconds. Exceptions raised by ``ready()`` count as "not yet"."""
        assert self.popen is not None, "start() first"
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            code = self.popen.poll()
            if code is not None:
                raise PeerError(
                    f"{what} exited with code {code} before it was ready", tail(self.log_path)
                )
            try:
                if ready():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = f" (last check: {type(exc).__name__}: {exc})"
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{what} was not ready after {timeout:.0f} s{last_error}", tail(self.log_path)
                )
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process tree, SIGKILL what is left after ``grace`` seconds, reap."""
        if self.popen is None:
            return
        try:
            # Even if the child already exited, members of its process group may live on.
            targets = process_tree(self.popen.pid)
            _signal_all(targets, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.popen.poll()
                if not any(is_alive(pid) for pid in targets):
                    break
                time.sleep(0.05)
            survivors = {pid for pid in targets if is_alive(pid)}
            if self.popen.poll() is None:
                survivors |= process_tree(self.popen.pid)
            _signal_all(survivors, signal.SIGKILL)
            self.popen.wait(timeout=grace)
        finally:
            self.popen = None
            if self._log is not None:
                self._log.close()
                self._log = None


class Peer:
    """Base of the test-bed peers: a private temp folder, one managed process, start/stop.

    Subclasses implement :meth:`_start` (set up, spawn ``self.process``, wait until ready) and may
    implement :meth:`_after_stop`. A failed start stops what was started and raises
    :class:`PeerError`. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    name = "peer"
    host = "127.0.0.1"

    def __init__(self, *, timeout: float = 30.0, grace: float = 10.0) -> None:
        self.timeout = timeout
        self.grace = grace
        self.tmp: Path | None = None
        self.process: ManagedProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        """The peer's own log file (stdout and stderr of its process)."""
        assert self.tmp is not None, "start() first"
        return self.tmp / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Self:
        """Start the peer and block until it is ready (or raise :class:`PeerError`)."""
        began = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"sms-{self.name}-"))
        atexit.register(self.stop)  # safety net if the owner never calls stop()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def spawn(
        self, argv: Sequence[str], ready: Callable[[], bool], *, env: Mapping[str, str] | None = None
    ) -> None:
        """Start ``argv`` as this peer's process and wait until ``ready()`` is true."""
        assert self.tmp is not None
        self.process = ManagedProcess(argv, self.log_path, env=env, cwd=self.tmp)
        self.process.start()
        self.process.wait_ready(ready, self.timeout, f"{self.name} (`{' '.join(argv[:3])} ...`)")

    def stop(self) -> None:
        """Stop what this peer started and remove its temp folder. Safe to call twice."""
        atexit.unregister(self.stop)
        try:
            if self.process is not None:
                self.process.stop(self.grace)
                self.process = None
            self._after_stop()
        finally:
            if self.tmp is not None and os.environ.get(KEEP_ENV) != "1":
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def halt(self) -> None:
        """Stop the process but keep the temp folder (data) and ports: an outage a subclass's
        ``resume()`` ends."""
        if self.process is not None:
            self.process.stop(self.grace)
            self.process = None

    def _start(self) -> None:
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Hook: extra clean-up after the process stopped."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ClusterNode(Peer):
    """A peer that is one node of a :class:`Cluster`: ``start()`` only launches it (a quorum
    answers once a majority runs), ``wait_ready()`` blocks until it answers."""

    def wait_ready(self) -> None:
        raise NotImplementedError


class Cluster:
    """Several :class:`ClusterNode` peers started together: each launched, then each waited for.
    Subclasses build the nodes in ``start()`` and hand them to :meth:`_start_nodes`."""

    def __init__(self) -> None:
        self.nodes: list[ClusterNode] = []
        self.startup_seconds: float | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _start_nodes(self, nodes: Sequence[ClusterNode], began: float) -> None:
        """Start ``nodes`` and wait for all (a failure stops them); ``began``: when the start began."""
        self.nodes = list(nodes)
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
