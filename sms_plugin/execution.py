"""One script execution on an open transport: upload, start, stream, time out, kill, clean up.

Knows transports and interpreters, not Prefect or the catalog: the flow passes callbacks that
record the process id and forward output.

Example::

    result = await execute(transport, ScriptRun(interpreter="bash", content="echo hi"),
                           on_started=print, on_output=print)
    result.exit_code    # 0
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from sms_plugin.environment import check_env, check_words
from sms_plugin.transports.base import MAX_LINE_CHARS, OutputLine, Stream, Transport
from sms_plugin.transports.interpreters import interpreter as find_interpreter

TAIL_LINES = 20
"""How many of the last output lines a result keeps (the run record's output tail)."""

KILL_GRACE_SECONDS = 5.0
"""Time between TERM and KILL when a run is stopped or times out."""

MESSAGE_CHARS = MAX_LINE_CHARS
"""Consecutive lines of one stream are forwarded together, in messages of at most this size (a
line is never longer: the transport splits longer ones, marking the splits)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScriptRun:
    """What to run: uploaded ``content`` or, for interpreter "original", the script at ``path``."""

    interpreter: str
    content: str | None = None
    path: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    timeout_seconds: float | None = None
    kill_grace_seconds: float = KILL_GRACE_SECONDS
    name: str = "script"
    run_id: str | None = None
    """Marks the run's processes, names its state file and its upload folder on the host."""


@dataclass(frozen=True)
class ExecutionResult:
    exit_code: int
    timed_out: bool
    tail: list[OutputLine]
    lines: dict[Stream, int] = field(default_factory=dict)
    """How many output lines each stream printed."""

    def stderr_tail(self, count: int = 5) -> list[str]:
        return [line.text for line in self.tail if line.stream == "stderr"][-count:]


def messages(batch: list[OutputLine]) -> Iterator[tuple[Stream, str]]:
    """Consecutive lines of the same stream joined into messages of at most MESSAGE_CHARS.

    >>> list(messages([OutputLine("stdout", "a"), OutputLine("stdout", "b"), OutputLine("stderr", "c")]))
    [('stdout', 'a\\nb'), ('stderr', 'c')]
    """
    stream: Stream | None = None
    parts: list[str] = []
    size = 0
    for line in batch:
        if parts and (line.stream != stream or size + len(line.text) > MESSAGE_CHARS):
            yield stream, "\n".join(parts)  # type: ignore[misc]
            parts, size = [], 0
        stream = line.stream
        parts.append(line.text)
        size += len(line.text) + 1
    if parts:
        yield stream, "\n".join(parts)  # type: ignore[misc]


async def execute(
    transport: Transport,
    run: ScriptRun,
    *,
    on_started: Callable[[int | None], Awaitable[None]],
    on_output: Callable[[Stream, str], Awaitable[None]],
) -> ExecutionResult:
    """Runs ``run`` on ``transport`` and returns its exit code and output tail.

    If the caller is cancelled (or any exception interrupts the run) the run is stopped before the
    exception goes on, whatever the stop itself raises; a timeout stops it too and sets
    ``timed_out``. The run's upload folder is removed in every case (if that fails, the reaper
    removes it).
    """
    spec = find_interpreter(run.interpreter)
    check_words(run.args)  # refused before anything is uploaded (the Plan checks again)
    check_env(run.env, sms_sets=True)
    uploads = await transport.uploads_of(run.run_id or _token()) if spec.uploads else None
    try:
        script = transport.join(uploads, f"{run.name}{spec.suffix}") if uploads else run.path
        assert script is not None, "an 'original' script needs its path"
        plan = spec.plan(script, run.args, env=run.env, cwd=run.working_dir, run_id=run.run_id)
        if uploads:
            process = await transport.launch_script(spec.encode(run.content or ""), plan)
        else:
            process = await transport.launch(plan)
        tail: deque[OutputLine] = deque(maxlen=TAIL_LINES)
        counts: dict[Stream, int] = {"stdout": 0, "stderr": 0}
        timed_out = False
        try:
            await on_started(process.pid)
            async with asyncio.timeout(run.timeout_seconds):
                async for batch in process.batches():
                    tail.extend(batch)
                    for line in batch:
                        counts[line.stream] += 1
                    for stream, message in messages(batch):
                        await on_output(stream, message)
                exit_code = await process.wait()
        except TimeoutError:
            timed_out = True
            await process.stop(run.kill_grace_seconds)
            exit_code = await process.wait()
        except BaseException:
            await _clean_up(process.stop(run.kill_grace_seconds))
            raise
        return ExecutionResult(exit_code=exit_code, timed_out=timed_out, tail=list(tail), lines=counts)
    finally:
        if uploads:
            await _clean_up(transport.remove(uploads))


async def _clean_up(step: Awaitable[None]) -> None:
    """Runs a clean-up ``step`` to its end even if the caller is cancelled meanwhile; an error
    of the step is logged, never raised: it must not replace why the run ended (a stop stays a
    stop), and the reaper finishes what the step could not."""
    try:
        await asyncio.shield(step)
    except Exception as error:  # noqa: BLE001 - whatever the transport raised
        log.warning("clean-up after the run failed (the reaper finishes it): %s", error)


def _token() -> str:
    import secrets

    return secrets.token_hex(6)
