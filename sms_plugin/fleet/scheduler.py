"""Runs one coroutine per host under a :class:`FleetPolicy` (pure asyncio: no Prefect, no catalog).

- at most ``policy.width()`` hosts run at once;
- with batches, hosts are taken in order, a batch at a time: the next batch starts when every host
  of the previous one has ended, after ``batch_pause_seconds``;
- once more hosts than the failure limit allows have failed (or timed out, or were unreachable),
  no new host starts: the running ones end as they would, the others end ``skipped``;
- at the policy's deadline (``deadline_seconds`` after :meth:`Fleet.run` began) it stops every
  running host (``stopped``) and starts no other (``skipped``);
- when the scheduler itself is cancelled (the run is stopped) it cancels every running host,
  waits until each has ended (a host's coroutine kills its script before it returns), marks them
  ``stopped`` and the hosts not started ``skipped``, and is cancelled in turn.

Example::

    fleet = Fleet(["web-01", "web-02"], run_one, FleetPolicy(parallel=10))
    outcomes = await fleet.run()      # one HostOutcome per host, in the hosts' order
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from sms_plugin.fleet.outcome import HostOutcome
from sms_plugin.fleet.policy import FleetPolicy

RunOne = Callable[[str], Awaitable[HostOutcome]]
"""Runs the script on one host and says how it went; cancelled, it stops the script and re-raises."""

log = logging.getLogger(__name__)


class Fleet:
    """One pass of ``run_one`` over ``hosts`` under ``policy``; :attr:`outcomes` fills as hosts end."""

    def __init__(self, hosts: Sequence[str], run_one: RunOne, policy: FleetPolicy) -> None:
        if len(set(hosts)) != len(hosts):
            raise ValueError("a fleet names each host once")
        self.hosts = list(hosts)
        self.run_one = run_one
        self.policy = policy
        self.outcomes: dict[str, HostOutcome] = {}
        self._failures = 0
        self._stopped = False
        self._expired = False
        self._deadline: float | None = None
        self._allowed = policy.failures_allowed(len(self.hosts))

    @property
    def halted(self) -> bool:
        """Whether the failure limit was passed: no new host starts."""
        return self._allowed is not None and self._failures > self._allowed

    def results(self) -> list[HostOutcome]:
        """Every host's outcome in the hosts' order; a host that never started is ``skipped``."""
        return [self.outcomes.get(host) or _skipped(host, self._skip_reason()) for host in self.hosts]

    async def run(self) -> list[HostOutcome]:
        """Goes through the hosts; returns :meth:`results`."""
        if self.policy.deadline_seconds is not None:
            self._deadline = time.monotonic() + self.policy.deadline_seconds
        size = self.policy.batch_size(len(self.hosts))
        for start in range(0, len(self.hosts), size):
            if self.halted or self._past_deadline():
                break
            if start and self.policy.batch_pause_seconds:
                await asyncio.sleep(_shorter(self.policy.batch_pause_seconds, self._left()))
                if self._past_deadline():
                    break
            await self._batch(self.hosts[start : start + size])
        return self.results()

    def _left(self) -> float | None:
        """Seconds until the deadline (None: there is none)."""
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def _past_deadline(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._expired = True
        return self._expired

    async def _batch(self, hosts: list[str]) -> None:
        waiting = deque(hosts)
        running: dict[asyncio.Task[HostOutcome], str] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.policy.width() and not self.halted:
                    host = waiting.popleft()
                    running[asyncio.create_task(self._one(host), name=f"fleet host {host}")] = host
                if not running:
                    return
                done, _ = await asyncio.wait(running, timeout=self._left(), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._ended(task.result())
                    del running[task]
                if self._past_deadline():
                    await self._stop(running)
                    return
        except BaseException:  # cancelled (or the process is terminating): stop what runs, then go on
            self._stopped = True
            await self._stop(running)
            raise

    async def _one(self, host: str) -> HostOutcome:
        began = time.monotonic()
        try:
            return await self.run_one(host)
        except asyncio.CancelledError:
            why = f"the run's deadline ({self.policy.deadline_seconds:g} s) passed" if self._expired else "the run was stopped"
            return HostOutcome(host, "stopped", seconds=time.monotonic() - began, message=f"{why} while the script ran here")
        except Exception as error:  # noqa: BLE001 - one host's fault must not leave the others unwatched
            log.exception("the execution on host %s failed unexpectedly", host)
            return HostOutcome(host, "failed", seconds=time.monotonic() - began, message=f"SMS failed on this host: {error!r}")

    def _ended(self, outcome: HostOutcome) -> None:
        self.outcomes[outcome.host] = outcome
        if outcome.counts_as_failure:
            self._failures += 1

    async def _stop(self, running: dict[asyncio.Task[HostOutcome], str]) -> None:
        """Cancels the running hosts and waits until each has ended (even if cancelled again)."""
        for task in running:
            task.cancel()
        while not all(task.done() for task in running):
            try:
                await asyncio.wait(running)
            except asyncio.CancelledError:
                continue
        for task, host in running.items():
            self._ended(_skipped(host, self._skip_reason()) if task.cancelled() else task.result())

    def _skip_reason(self) -> str:
        if self._stopped:
            return "not started: the run was stopped"
        if self._expired:
            return f"not started: the run's deadline ({self.policy.deadline_seconds:g} s) passed"
        if self.halted:
            return f"not started: more than {self._allowed} host(s) failed"
        return "not started"


def _shorter(seconds: float, left: float | None) -> float:
    return seconds if left is None else min(seconds, left)


def _skipped(host: str, reason: str) -> HostOutcome:
    return HostOutcome(host, "skipped", message=reason)
