"""`sms script add` and `sms script set` judge their settings before anything is saved: a name that
is no host, an unknown interpreter, a schedule that is malformed, never fires or fires more often than
``SMS_SCHEDULE_MIN_SECONDS``, a bad timeout or tag. Each is a :class:`RefusedSetting`: one line,
exit status 2, nothing created (docs/cli.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sms_plugin.errors import InvalidInput, RefusedSetting

if TYPE_CHECKING:
    from sms_plugin.catalog.spec import ScheduleSpec, ScriptSpec
    from sms_plugin.cli.backend import Backend
    from sms_plugin.schedules import Preview


def checked_spec(door: Backend, fields: Mapping[str, Any]) -> ScriptSpec:
    """The script ``fields`` describe, once every setting is judged good (RefusedSetting otherwise)."""
    from sms_plugin.catalog.spec import ScriptSpec
    from sms_plugin.transports.interpreters import interpreter

    try:
        spec = ScriptSpec.parse(fields)
        interpreter(spec.interpreter)
    except InvalidInput as error:
        raise RefusedSetting(str(error)) from None
    for schedule in spec.schedules:
        preview_of(schedule)
    if spec.host is not None:  # last: the only check that asks Prefect
        require_host(door, spec.host)
    return spec


def require_host(door: Backend, name: str) -> None:
    """RefusedSetting unless ``door`` knows a host called ``name``."""
    known = sorted(host.name for host in door.hosts())
    if name not in known:
        raise RefusedSetting(f"no host named {name!r}: add it first (`sms host add`); hosts: {', '.join(known) or 'none'}")


def preview_of(schedule: ScheduleSpec, count: int = 3) -> Preview | None:
    """The next ``count`` runs of a cron schedule (None for an interval); RefusedSetting for a schedule
    that is malformed, never fires, has an unknown time zone, or fires more often than the minimum."""
    from sms_plugin import schedules

    if schedule.cron is not None:
        return schedules.preview(schedule.cron, schedule.timezone, count)
    schedules.zone(schedule.timezone)
    floor = schedules.min_seconds()
    if schedule.interval_seconds is not None and schedule.interval_seconds < floor:
        raise RefusedSetting(f"--every {schedule.interval_seconds}: the shortest interval SMS schedules is {floor} s "
                             "(SMS_SCHEDULE_MIN_SECONDS)")
    return None
