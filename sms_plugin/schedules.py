"""Cron schedules judged before they are saved: the next run times, a plain-English reading, and a
floor on how often a schedule may fire (``SMS_SCHEDULE_MIN_SECONDS``, default 300).

Fire times come from cronsim, the cron library Prefect's own ``Cron`` schedule uses, in the schedule's
IANA time zone (daylight-saving changes as Prefect's scheduler handles them)::

    preview("0 3 * * MON-FRI", "Europe/Paris", 5).next_runs   # the next five 03:00 on weekdays, Paris time
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sms_plugin.catalog.spec import check_cron
from sms_plugin.errors import RefusedSetting
from sms_plugin.settings import current

MAX_PREVIEW = 50
#: How far ahead the shortest gap between two fire times is looked for: a week and a day covers
#: every weekday and every day boundary; at most this many fire times are read.
_GAP_SPAN = timedelta(days=8)
_GAP_FIRES = 600


def min_seconds() -> int:
    """The shortest interval a schedule may fire at (``SMS_SCHEDULE_MIN_SECONDS``, default 300)."""
    return current().schedules.min_seconds


def zone(timezone: str) -> ZoneInfo:
    """The IANA time zone ``timezone``; RefusedSetting naming it when there is none of that name."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name that is a folder of the zone database
        raise RefusedSetting(f"unknown time zone {timezone!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None


@dataclass(frozen=True)
class Preview:
    """A cron schedule as a person checks it before saving it."""

    cron: str
    timezone: str
    explanation: str
    next_runs: list[datetime]
    shortest_gap_seconds: int | None
    """The shortest time between two fire times seen (the next 8 days at least; None: it fired once)."""


def _simulation(cron: str, start: datetime) -> CronSim:
    try:
        check_cron(cron)
        return CronSim(cron, start)
    except (ValueError, CronSimError) as error:
        raise RefusedSetting(f"cron {cron!r} is not valid: {error}") from None


def _fires(simulation: CronSim, cron: str, count: int) -> list[datetime]:
    """At least ``count`` fire times, and on until 8 days after the first (at most 600): enough to see
    the shortest gap."""
    fires: list[datetime] = []
    try:
        for fire in simulation:
            fires.append(fire)
            if len(fires) >= count and (fire > fires[0] + _GAP_SPAN or len(fires) >= _GAP_FIRES):
                break
    except (CronSimError, ValueError, OverflowError):  # past year 9999: what was found stands
        pass
    if not fires:
        raise RefusedSetting(f"cron {cron!r} never fires")
    return fires


def preview(cron: str, timezone: str = "UTC", count: int = 5, *, after: datetime | None = None) -> Preview:
    """The next ``count`` (1-50) fire times of ``cron`` in ``timezone`` after ``after`` (default: now).

    RefusedSetting with the reason for a malformed cron, an unknown zone, a schedule that never
    fires or one that fires more often than :func:`min_seconds`."""
    if not 1 <= count <= MAX_PREVIEW:
        raise RefusedSetting(f"count must be 1-{MAX_PREVIEW}, not {count}")
    tz = zone(timezone)
    start = (after or datetime.now(tz)).astimezone(tz)
    simulation = _simulation(cron, start)
    explanation = simulation.explain()
    fires = _fires(simulation, cron, count)
    instants = [fire.astimezone(UTC) for fire in fires]  # one zone's datetimes subtract as wall clocks
    gaps = [int((later - earlier).total_seconds()) for earlier, later in zip(instants, instants[1:], strict=False)]
    shortest = min(gaps) if gaps else None
    floor = min_seconds()
    if shortest is not None and shortest < floor:
        raise RefusedSetting(
            f"cron {cron!r} fires every {shortest} s at times ({explanation}); the shortest interval SMS schedules is "
            f"{floor} s (SMS_SCHEDULE_MIN_SECONDS)"
        )
    return Preview(cron, timezone, explanation, fires[:count], shortest)


def checked(cron: str, timezone: str) -> dict[str, str]:
    """The schedule entry a script stores for ``cron`` in ``timezone``, once :func:`preview` accepts it."""
    preview(cron, timezone, 1)
    return {"cron": cron, "timezone": timezone}
