"""A fleet run's policy: how many hosts at a time, in which batches, and when to give up.

The vocabulary is Ansible's (``forks``, ``serial``, ``max_fail_percentage``) and Rundeck's
("thread count", "keep going")::

    policy = FleetPolicy.parse({"parallel": 20, "batch": "10%", "max_failures": "5%"})
    policy.batch_size(200)      # 20: rolling batches of 20 hosts
    policy.failures_allowed(200)  # 10: the 11th failed or unreachable host stops new starts
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sms_plugin.errors import InvalidInput

DEFAULT_PARALLEL = 50
"""Hosts at a time when the policy does not say."""
MAX_PARALLEL = 5000
"""The most hosts a fleet run has, so the most that can run at once."""
MAX_PAUSE_SECONDS = 86_400.0
MAX_DEADLINE_SECONDS = 7 * 86_400.0
_COUNT = re.compile(r"^(\d{1,9})(%?)$")


@dataclass(frozen=True)
class Share:
    """A count of hosts given as a number ("10") or a share of the fleet ("10%")."""

    value: int
    percent: bool

    def of(self, hosts: int, *, round_up: bool) -> int:
        """How many of ``hosts`` this is (a percentage rounded up or down)."""
        if not self.percent:
            return self.value
        share = hosts * self.value / 100
        return math.ceil(share) if round_up else math.floor(share)

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class FleetPolicy:
    """How a fleet run goes through its hosts; every field is optional."""

    parallel: int | None = None
    """Hosts at a time (default :data:`DEFAULT_PARALLEL`)."""
    batch: str | None = None
    """Rolling batches: "10" hosts or "10%" of them; the next batch starts when the previous has ended."""
    batch_pause_seconds: float = 0.0
    """Seconds between two batches."""
    max_failures: str | None = None
    """Once more hosts than this ("3" or "5%") have failed or were unreachable, no new host starts."""
    fail_fast: bool = False
    """The first failed or unreachable host stops new starts (``max_failures`` "0")."""
    deadline_seconds: float | None = None
    """Seconds from the start of the run's hosts: then the hosts not started are skipped and those
    running are stopped."""

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> FleetPolicy:
        """The policy in ``data`` (the flow's ``policy`` parameter); InvalidInput saying what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput(f"the fleet policy must be an object, not {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise InvalidInput(f"the fleet policy has no field(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
        policy = cls(
            parallel=_parallel(data.get("parallel")),
            batch=_share("batch", data.get("batch"), smallest=1),
            batch_pause_seconds=_pause(data.get("batch_pause_seconds", 0.0)),
            max_failures=_share("max_failures", data.get("max_failures"), smallest=0),
            fail_fast=_flag(data.get("fail_fast", False)),
            deadline_seconds=_deadline(data.get("deadline_seconds")),
        )
        if policy.fail_fast and policy.max_failures not in (None, "0"):
            raise InvalidInput(f"fail_fast means max_failures 0: give one of them, not fail_fast with max_failures {policy.max_failures}")
        if policy.batch_pause_seconds and policy.batch is None:
            raise InvalidInput("batch_pause_seconds is the pause between batches: give batch too")
        return policy

    def width(self) -> int:
        """Hosts at a time."""
        return self.parallel or DEFAULT_PARALLEL

    def batch_size(self, hosts: int) -> int:
        """Hosts per batch out of ``hosts`` (all of them without batches; at least 1)."""
        if self.batch is None:
            return max(hosts, 1)
        return max(_parsed(self.batch).of(hosts, round_up=True), 1)

    def failures_allowed(self, hosts: int) -> int | None:
        """How many failed or unreachable hosts out of ``hosts`` still let new hosts start; None: no limit."""
        if self.fail_fast:
            return 0
        if self.max_failures is None:
            return None
        return _parsed(self.max_failures).of(hosts, round_up=False)

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _parsed(text: str) -> Share:
    match = _COUNT.match(text)
    assert match is not None, text  # checked by parse
    return Share(int(match[1]), bool(match[2]))


def _parallel(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL:
        raise InvalidInput(f"parallel must be a whole number of hosts from 1 to {MAX_PARALLEL}, not {value!r}")
    return value


def _share(name: str, value: Any, *, smallest: int) -> str | None:
    """``value`` ("10", "10%" or the number 10) as its text; InvalidInput if it is not a count or percentage."""
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    match = _COUNT.match(text)
    if match is None:
        raise InvalidInput(f'{name} must be a number of hosts ("10") or a percentage of them ("10%"), not {value!r}')
    share = Share(int(match[1]), bool(match[2]))
    if share.percent and not smallest <= share.value <= 100:
        raise InvalidInput(f"{name} as a percentage must be from {smallest}% to 100%, not {value!r}")
    if share.value < smallest:
        raise InvalidInput(f"{name} must be at least {smallest} host(s), not {value!r}")
    return str(share)


def _pause(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PAUSE_SECONDS:
        raise InvalidInput(f"batch_pause_seconds must be a number of seconds from 0 to {MAX_PAUSE_SECONDS:g}, not {value!r}")
    return float(value)


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_DEADLINE_SECONDS:
        raise InvalidInput(f"deadline_seconds must be a number of seconds above 0 and at most {MAX_DEADLINE_SECONDS:g}, not {value!r}")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"fail_fast must be true or false, not {value!r}")
    return value
