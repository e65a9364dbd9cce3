"""Crash recovery: finding and ending a run from a connection that did not start it.

An optional capability of a transport (:class:`RunRecovery`): the SSH and local transports have
it (process groups, ``SMS_RUN_ID`` markers and state files, see ``transports.posix``); the
Windows transport does not (a crashed worker's WinRM shell is deleted by Windows after the host's
``idle_timeout``, and every process of the shell with it).

Stopping a live run (:class:`GroupProcess`) and reaping a dead one (:func:`reap`) end the run
through the same :meth:`RunRecovery.end_run`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from sms_plugin.transports.base import RemoteProcess, Transport

Signal = Literal["TERM", "KILL", "0"]
_POLL_SECONDS = 0.1


class RunRecovery(ABC):
    """What a transport needs to re-find and end a run by its id alone."""

    @abstractmethod
    async def signal_run(self, pgid: int | None, run_id: str | None, signal: Signal) -> bool:
        """Sends ``signal`` ("TERM", "KILL" or "0" to probe) to process group ``pgid`` and to every
        process marked with ``run_id``; False if no such process is left."""

    @abstractmethod
    async def recorded_group(self, run_id: str) -> int | None:
        """The process group id in the run's state file on the host, or None if there is none."""

    @abstractmethod
    async def forget_run(self, run_id: str) -> None:
        """Removes the run's state file (its leader was killed before it could)."""

    async def end_run(self, pgid: int | None, run_id: str | None, grace_seconds: float = 5.0) -> bool:
        """TERM to the run's processes, KILL to what is left after ``grace_seconds``; removes the
        state file. Returns whether any process of the run was found."""
        found = await self.signal_run(pgid, run_id, "0")
        if found:
            await self.signal_run(pgid, run_id, "TERM")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_seconds
            while loop.time() < deadline and await self.signal_run(pgid, run_id, "0"):
                await asyncio.sleep(_POLL_SECONDS)
            await self.signal_run(pgid, run_id, "KILL")
        if run_id:
            await self.forget_run(run_id)
        return found


class GroupProcess(RemoteProcess):
    """A run in a process group of its own, on a host whose transport has :class:`RunRecovery`."""

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """TERM, then KILL after ``grace_seconds``, to the group and every process marked with the run."""
        transport = self.transport
        assert isinstance(transport, RunRecovery)
        await transport.end_run(self.pid, self.run_id, grace_seconds)


@dataclass(frozen=True)
class Reaped:
    """What :func:`reap` did on the host."""

    pgid: int | None
    found: bool | None
    """Whether a process of the run was found and ended; None: the host cannot re-find runs."""

    def __str__(self) -> str:
        if self.found is None:
            return ("this kind of host cannot re-find a run from another connection (its shell and "
                    "processes end with the host's idle timeout); removed its uploads")
        if self.found:
            return f"killed process group {self.pgid} and the processes marked with the run; removed its uploads"
        return "found no process left; removed its uploads"


async def reap(transport: Transport, run_id: str, pgid: int | None, grace_seconds: float) -> Reaped:
    """Ends what is left of run ``run_id`` (process group ``pgid`` if known, else the one in its
    state file) and removes its uploads, from any connection to its host."""
    found: bool | None = None
    if isinstance(transport, RunRecovery):
        pgid = pgid or await transport.recorded_group(run_id)
        found = await transport.end_run(pgid, run_id, grace_seconds)
    await transport.remove(await transport.uploads_of(run_id))
    return Reaped(pgid, found)
