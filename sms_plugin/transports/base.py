"""The transport interface: bytes and processes in, output lines and exit codes out.

A transport is opened for one host, can ``upload``/``remove`` files and ``start`` a command.
``start`` returns a :class:`RemoteProcess` whose output arrives line by line as the remote
side writes it, which knows its process (group) id, ``wait``s for the exit code and can
``kill`` the whole remote process tree.

Example::

    async with LocalTransport() as transport:
        path = await transport.upload(b"echo hi\\n", "hello.sh")
        process = await transport.start(Command(argv=["sh", path]))
        async for line in process.lines():
            print(line.stream, line.text)
        print(await process.wait())   # 0
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal, Self, TypeVar

from sms_plugin.environment import check_env, check_words

Stream = Literal["stdout", "stderr"]

MAX_LINE_BYTES = 1024 * 1024
"""A longer line is delivered in pieces of this size, so one runaway line cannot exhaust memory."""

_QUEUE_BATCHES = 64
"""How many output batches may wait for the reader before the producer blocks (back-pressure)."""

_KILL_POLL_SECONDS = 0.1

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


@dataclass(frozen=True)
class Command:
    """What to run: an argument vector, extra environment and a working directory.

    Each transport carries ``argv`` to the host so that every element arrives byte for byte
    (POSIX hosts: single-quoted for ``/bin/sh``; the local host: no shell at all).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    run_id: str | None = None
    """Marks every process of the run (``SMS_RUN_ID``) and names its state file on the host."""

    def __post_init__(self) -> None:
        """Refuses (InvalidInput) what no transport may carry: NUL bytes, and environment names that
        are not plain names or that an interpreter, the loader or SMS reads at start-up."""
        check_words(self.argv)
        check_env(self.env, sms_sets=True)


class LineSplitter:
    """Turns a byte stream into text lines, decoding UTF-8 across chunk boundaries.

    >>> s = LineSplitter()
    >>> s.feed(b"a\\r\\nb") + s.flush()
    ['a', 'b']
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        while len(self._pending) > MAX_LINE_BYTES:
            lines.append(self._pending[:MAX_LINE_BYTES])
            self._pending = self._pending[MAX_LINE_BYTES:]
        return [line.removesuffix("\r") for line in lines]

    def flush(self) -> list[str]:
        """The last, unterminated line, if any."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [rest.removesuffix("\r")] if rest else []


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

    async def _lifecycle(self) -> int:
        code = await self._main_exit()
        drained = await self._streams_close_within(self.drain_seconds)
        await self.kill(grace_seconds=self.drain_seconds)  # whatever of the run is still alive
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

        def call(coroutine_function: Callable[..., object], *args: object) -> None:
            asyncio.run_coroutine_threadsafe(coroutine_function(*args), loop).result()

        def pump() -> None:
            splitter = LineSplitter()
            try:
                while chunk := read(READ_BYTES):
                    call(self._publish, stream, splitter.feed(chunk))
                call(self._publish, stream, splitter.flush())
            except (OSError, EOFError):
                pass  # the connection broke: the stream ends here, wait() reports the rest
            finally:
                call(self._close_stream)

        threading.Thread(target=pump, name=f"sms-{stream}-{self.pid}", daemon=True).start()

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

    async def kill(self, grace_seconds: float = 5.0) -> None:
        """Ends the whole run: TERM, then KILL whatever is left after ``grace_seconds``."""
        await self.transport.kill_run(self.pid, self.run_id, grace_seconds)

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

    @abstractmethod
    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        """Writes ``content`` to ``path`` on the host (parent folders are created)."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Removes a file on the host; a missing file is not an error."""

    @abstractmethod
    async def start(self, command: Command) -> RemoteProcess:
        """Starts ``command`` in a process group of its own; returns once its id is known."""

    @abstractmethod
    async def signal_run(self, pgid: int | None, run_id: str | None, signal: str) -> bool:
        """Sends ``signal`` ("TERM", "KILL" or "0" to probe) to process group ``pgid`` and to every
        process marked with ``run_id``; False if no such process is left."""

    @abstractmethod
    async def run_state(self, run_id: str) -> int | None:
        """The process group id in the run's state file on the host, or None if there is none."""

    @abstractmethod
    async def remove_state(self, run_id: str) -> None:
        """Removes the run's state file (its leader was killed before it could)."""

    async def kill_run(self, pgid: int | None, run_id: str | None, grace_seconds: float = 5.0) -> bool:
        """TERM to the run's processes, KILL to what is left after ``grace_seconds``.

        Works without a process handle (for a reaper after a crash). Returns whether any process
        of the run was found.
        """
        found = await self.signal_run(pgid, run_id, "0")
        if found:
            await self.signal_run(pgid, run_id, "TERM")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_seconds
            while loop.time() < deadline and await self.signal_run(pgid, run_id, "0"):
                await asyncio.sleep(_KILL_POLL_SECONDS)
            await self.signal_run(pgid, run_id, "KILL")
        if run_id:
            await self.remove_state(run_id)
        return found

    @abstractmethod
    async def close(self) -> None:
        """Closes the connection; processes started through it are not touched."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
