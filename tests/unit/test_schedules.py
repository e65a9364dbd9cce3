"""Cron schedules judged before saving (sms_plugin.schedules): next runs in the zone, the floor."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sms_plugin import schedules
from sms_plugin.errors import RefusedSetting, SMSError

PARIS = ZoneInfo("Europe/Paris")
AFTER = datetime(2027, 3, 26, 12, 0, tzinfo=PARIS)  # a Friday, two days before summer time


def test_next_runs_are_in_the_schedules_zone_across_a_clock_change():
    preview = schedules.preview("0 3 * * *", "Europe/Paris", 3, after=AFTER)
    assert preview.next_runs == [datetime(2027, 3, day, 3, 0, tzinfo=PARIS) for day in (27, 28, 29)]
    assert [run.utcoffset().total_seconds() / 3600 for run in preview.next_runs] == [1, 2, 2]
    assert preview.shortest_gap_seconds == 23 * 3600  # the night the clocks go forward
    assert "03:00" in preview.explanation


def test_the_shortest_gap_is_found_inside_a_burst():
    preview = schedules.preview("0,5 9 * * MON", "UTC", 2, after=AFTER)
    assert preview.shortest_gap_seconds == 300
    with pytest.raises(RefusedSetting, match=r"fires every 240 s .* is 300 s"):
        schedules.preview("0,4 9 * * MON", "UTC", after=AFTER)


def test_the_floor_is_a_setting(monkeypatch):
    monkeypatch.setenv("SMS_SCHEDULE_MIN_SECONDS", "60")
    assert schedules.preview("* * * * *", "UTC", 2, after=AFTER).shortest_gap_seconds == 60
    monkeypatch.setenv("SMS_SCHEDULE_MIN_SECONDS", "30")
    with pytest.raises(SMSError, match="SMS_SCHEDULE_MIN_SECONDS: .*greater than or equal to 60"):
        schedules.preview("* * * * *", "UTC")


@pytest.mark.parametrize(("cron", "timezone", "says"), [
    ("0 3 * *", "UTC", "must have 5 fields"),
    ("0 24 * * *", "UTC", "hour field '24' is invalid"),
    ("0 0 30 2 *", "UTC", "is not valid"),
    ("0 3 * * *", "Europe/Pariss", "unknown time zone 'Europe/Pariss'"),
    ("0 3 * * *", "../../etc/passwd", "unknown time zone"),
    ("0 3 * * *", "Europe", "unknown time zone"),
])
def test_refusals_say_why(cron, timezone, says):
    with pytest.raises(RefusedSetting, match=says):
        schedules.preview(cron, timezone)


def test_a_yearly_schedule_has_a_preview_and_a_years_gap():
    preview = schedules.preview("0 0 1 1 *", "UTC", 2, after=AFTER)
    assert [run.year for run in preview.next_runs] == [2028, 2029]
    assert preview.shortest_gap_seconds == 366 * 86400
