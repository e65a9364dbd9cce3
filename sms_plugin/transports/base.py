"""The transport contract: launch a plan, stream its output, wait for it, stop it.

A transport is opened for one host. It can ``upload``/``remove`` files (a run's uploads live in a
folder of their own, :meth:`Transport.uploads_of`) and ``launch`` a :class:`Plan`, a structured
description of what to run (interpreter, script, arguments, environment) that each transport
carries in its own way. ``launch`` returns a :class:`RemoteProcess` whose output arrives line by
line as the remote side writes it, which ``wait``s for the exit code and can ``stop`` the whole run.

Only SMS errors (``sms_plugin.errors``) leave a transport: each maps the exceptions of its
libraries once, with an :class:`~sms_plugin.errors.ErrorMap`.

Finding and ending a run from a connection that did not start it (after a crash) is a separate,
optional capability: :class:`sms_plugin.transports.recovery.RunRecovery`.

Example::

    async with LocalTransport() as transport:
        folder = await transport.uploads_of("example")
        path = transport.join(folder, "hello.sh")
        await transport.upload(b"echo hi\\n", path)
        process = await transport.launch(INTERPRETERS["sh"].plan(path, []))
        async for line in process.lines():
            print(line.stream, line.text)
        print(await process.wait())   # 0
        await transport.remove(folder)
"""

from __future__ import annotations

import asyncio
import codecs
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal, Self, TypeVar

from sms_plugin.environment import check_env, check_words
from sms_plugin.errors import InvalidInput

Stream = Literal["stdout", "stderr"]

MAX_LINE_CHARS = 256 * 1024
"""A longer line is delivered in pieces of at most this many characters (marker included), so
one runaway line cannot exhaust memory and every piece fits one log message."""

CONTINUES = "[sms: line continues]"
"""Ends every piece of a split line but the last (docs/logs.md), wherever the output is read."""

_QUEUE_BATCHES = 64
"""How many output batches may wait for the reader before the producer blocks (back-pressure)."""

READ_BYTES = 64 * 1024


T = TypeVar("T")


async def in_thread(call: Callable[[], T]) -> T:
    """Runs a blocking call that may last as long as a script, in a thread of its own.

    ``asyncio.to_thread`` shares a handful of executor threads; waits that last a whole run
    would fill them and stall short calls (a kill) behind them.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(outcome)  # type: ignore[arg-type]
        else:
            future.set_exception(error)

    def run() -> None:
        try:
            outcome = call()
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, outcome, None)

    threading.Thread(target=run, name="sms-wait", daemon=True).start()
    return await future


class SecretsMasked:
    """Dataclass mixin (declare the dataclass with ``repr=False``): the repr shows the fields named
    in ``SECRETS`` as ``'***'`` when set, so no log or message prints a password or key."""

    SECRETS: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            value = getattr(self, name)
            return "'***'" if name in self.SECRETS and value else repr(value)

        listed = ", ".join(f"{f.name}={shown(f.name)}" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({listed})"


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a script wrote, without its line ending."""

    stream: Stream
    text: str


PlanKind = Literal["program", "powershell", "batch"]
"""How a plan runs: "program" (an argument vector: the interpreter, the script, its arguments),
"powershell" (a .ps1 script: Windows runs it in a PowerShell pipeline) or "batch" (a .bat/.cmd
script: Windows runs it through cmd.exe). POSIX hosts run "program" plans only."""

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Plan:
    """What to run, as data; each transport decides how to carry it to its host.

    Interpreters make plans (``INTERPRETERS["bash"].plan(path, args)``); a plain command is
    ``Plan(program=("sh", "-c", "echo hi"))``.
    """

    program: tuple[str, ...] = ()
    """The interpreter and its options (e.g. ``("bash",)``); empty for a script run by its path."""
    script: str | None = None
    """The script file on the host (uploaded, or an "original" script's own path)."""
    args: tuple[str, ...] = ()
    kind: PlanKind = "program"
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    run_id: str | None = None
    """Marks every process of the run (``SMS_RUN_ID``) and names its state file on POSIX hosts."""

    def __post_init__(self) -> None:
        """Refuses (InvalidInput) an empty plan, a PowerShell or batch plan without its script, NUL
        bytes, and environment names that are not plain names or that an interpreter, the loader
        or SMS reads at start-up."""
        if not self.argv:
            raise InvalidInput("nothing to run: the plan has no program and no script")
        if self.kind != "program" and self.script is None:
            raise InvalidInput(f"a {self.kind} plan needs its script")
        check_words(self.argv)
        check_env(self.env, sms_sets=True)

    @property
    def argv(self) -> list[str]:
        """The argument vector of a "program" plan: program, script, arguments."""
        return [*self.program, *([self.script] if self.script is not None else []), *self.args]


def check_run_key(key: str) -> str:
    """``key`` if it can name a run's upload folder (one plain path component), else InvalidInput."""
    if not _SAFE_KEY.fullmatch(key) or key in {".", ".."}:
        raise InvalidInput(f"unsafe run key {key!r}")
    return key


class LineSplitter:
    """Turns a byte stream into text lines, decoding UTF-8 across chunk boundaries.

    A line longer than ``limit`` characters is delivered in pieces: each but the last holds
    ``limit - len(CONTINUES)`` characters of the line and ends with :data:`CONTINUES`, the last
    holds the rest (at most ``limit`` characters).

    >>> s = LineSplitter()
    >>> s.feed(b"a\\r\\nb") + s.flush()
    ['a', 'b']
    >>> pieces = LineSplitter(limit=len(CONTINUES) + 10).feed(b"0123456789" * 4 + b"\\n")
    >>> [p.replace(CONTINUES, "+") for p in pieces]
    ['0123456789+', '012345678901234567890123456789']
    """

    def __init__(self, limit: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._limit = limit
        self._piece = limit - len(CONTINUES)

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        pieces = [piece for line in lines for piece in self._split(line.removesuffix("\r"))]
        while len(self._pending) > self._limit + 1:  # + 1: the line may still end with "\r\n"
            pieces.append(self._pending[: self._piece] + CONTINUES)
            self._pending = self._pending[self._piece :]
        return pieces

    def flush(self) -> list[str]:
        """The last, unterminated line, if any."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return self._split(rest.removesuffix("\r")) if rest else []

    def _split(self, line: str) -> list[str]:
        pieces = []
        while len(line) > self._limit:
            pieces.append(line[: self._piece] + CONTINUES)
            line = line[self._piece :]
        return [*pieces, line]


class RemoteProcess(ABC):
    """A started command and its whole process group.

    Read the output with :meth:`batches` or :meth:`lines` (concurrently with, or before,
    :meth:`wait`): output waits in a bounded queue, so a reader that stops reading also stops
    the script once the queue is full, instead of filling memory.

    The run owns its processes. When the script's main process exits, the rest gets
    ``drain_seconds`` to finish writing output; then whatever of the run is still alive (its
    process group, and processes marked with its run id) is killed, so no child outlives its run.
    """

    drain_seconds = 2.0
    """How long output may still arrive after the main process exited."""

    def __init__(self, transport: Transport, run_id: str | None, pid: int | None = None) -> None:
        self.transport = transport
        self.run_id = run_id
        self.pid = pid
        """The remote process id, which is also its process group id on POSIX hosts."""
        self._queue: asyncio.Queue[list[OutputLine] | None] = asyncio.Queue(_QUEUE_BATCHES)
        self._unread_streams = 2
        self._open_streams = 2
        self._streams_closed = asyncio.Event()
        self._abandoned = False
        self._last_output = time.monotonic()
        self._supervisor: asyncio.Task[int] | None = None

    def _supervise(self) -> None:
        """Subclasses call this once the process runs and its producers are started."""
        self._supervisor = asyncio.create_task(self._lifecycle())
        # A run stopped before anyone waited for it may end with the transport's error: taken here.
        self._supervisor.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _lifecycle(self) -> int:
        code = await self._main_exit()
        drained = await self._streams_close_within(self.drain_seconds)
        await self.stop(grace_seconds=self.drain_seconds)  # whatever of the run is still alive
        if not drained and not await self._streams_close_while_output_flows(self.drain_seconds):
            await self._abandon_output()
            await self._streams_closed.wait()
        return code

    async def _streams_close_while_output_flows(self, idle_seconds: float) -> bool:
        """After the kill: True once both streams closed; False once the reader has taken every
        queued line and no new output came for ``idle_seconds``. Output still buffered (a slow
        reader draining a full queue) extends the wait, so a big output is never cut off."""
        while not await self._streams_close_within(idle_seconds):
            if self._queue.empty() and time.monotonic() - self._last_output >= idle_seconds:
                return False
        return True

    async def _streams_close_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._streams_closed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _pump_in_thread(self, stream: Stream, read: Callable[[int], bytes]) -> None:
        """Reads one stream with a blocking ``read(n)`` in a thread of its own until it returns b""."""
        loop = asyncio.get_running_loop()

        def pump() -> None:
            splitter = LineSplitter()
            try:
                while chunk := read(READ_BYTES):
                    self._from_thread(loop, stream, splitter.feed(chunk))
                self._from_thread(loop, stream, splitter.flush())
            except (OSError, EOFError):
                pass  # the connection broke: the stream ends here, wait() reports the rest
            finally:
                self._from_thread(loop, stream, None)

        threading.Thread(target=pump, name=f"sms-{stream}-{self.pid}", daemon=True).start()

    def _from_thread(self, loop: asyncio.AbstractEventLoop, stream: Stream, lines: list[str] | None) -> None:
        """From a reading thread: publishes ``lines`` of ``stream`` (None: the stream ended), waiting
        while the queue is full."""
        coroutine = self._close_stream() if lines is None else self._publish(stream, lines)
        asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def _publish(self, stream: Stream, lines: list[str]) -> None:
        if lines and not self._abandoned:
            await self._queue.put([OutputLine(stream, text) for text in lines])
            self._last_output = time.monotonic()

    async def _close_stream(self) -> None:
        if self._open_streams:
            self._open_streams -= 1
            await self._queue.put(None)
        if not self._open_streams:
            self._streams_closed.set()

    async def _abandon_output(self) -> None:
        """Stops waiting for output that a process outside the group still holds open."""
        self._abandoned = True
        while self._open_streams:
            await self._close_stream()

    async def batches(self) -> AsyncIterator[list[OutputLine]]:
        """Output lines in arrival order, grouped as they arrived; ends when both streams closed."""
        while self._unread_streams:
            batch = await self._queue.get()
            if batch is None:
                self._unread_streams -= 1
            else:
                yield batch

    async def lines(self) -> AsyncIterator[OutputLine]:
        """Output lines one by one, in arrival order."""
        async for batch in self.batches():
            for line in batch:
                yield line

    async def wait(self) -> int:
        """The exit code of the main process (128 + N when a signal N ended it), once output ended."""
        assert self._supervisor is not None, "the transport did not supervise this process"
        return await asyncio.shield(self._supervisor)

    @abstractmethod
    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Ends the whole run: asks it to end, then forces whatever is left after ``grace_seconds``."""

    @abstractmethod
    async def _main_exit(self) -> int:
        """Waits for the main process to exit and returns its exit code."""


class Transport(ABC):
    """One open connection to one host."""

    @abstractmethod
    async def scratch_dir(self) -> str:
        """An absolute path of a private folder on the host for uploaded scripts."""

    def join(self, folder: str, name: str) -> str:
        """The path of ``name`` in ``folder`` on the host (POSIX here; Windows overrides)."""
        return f"{folder}/{name}"

    async def uploads_of(self, run_key: str) -> str:
        """The folder of one run's uploads, ``<scratch dir>/<run key>`` (the run key is the flow
        run id): the run removes it when it ends, the reaper after a crash."""
        return self.join(await self.scratch_dir(), check_run_key(run_key))

    @abstractmethod
    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        """Writes ``content`` to ``path`` on the host (parent folders are created)."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Removes a file, or a folder and the files in it; a missing one is not an error."""

    @abstractmethod
    async def launch(self, plan: Plan) -> RemoteProcess:
        """Starts ``plan`` as a run of its own (POSIX: a process group); returns once it runs."""

    async def launch_script(self, content: bytes, plan: Plan) -> RemoteProcess:
        """Writes ``content`` to ``plan.script`` (as :meth:`upload` does) and launches ``plan``;
        a transport that can do both in one round trip overrides it (SSH: the launch channel's stdin)."""
        assert plan.script is not None, "a plan that runs an uploaded script names it"
        await self.upload(content, plan.script)
        return await self.launch(plan)

    @abstractmethod
    async def close(self) -> None:
        """Closes the connection, never raising; processes started through it are not touched."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
