"""The order of the exporter's host checks and the bound on how many run at once."""

from __future__ import annotations

import pytest

from sms_plugin import settings
from sms_plugin.errors import SMSError
from sms_plugin.telemetry.exporter import check_order


def test_hosts_without_a_gauge_come_first_each_part_in_its_own_order():
    names = ["a", "b", "c", "d", "e"]
    assert check_order(names, {"a", "c", "e"}) == ["b", "d", "a", "c", "e"]
    assert check_order(names, set()) == names
    assert check_order(names, set(names)) == names
    assert check_order([], {"a"}) == []


def test_parallel_checks_default_and_bounds(monkeypatch):
    assert settings.ExporterSettings().parallel_checks == 32
    monkeypatch.setenv("SMS_EXPORTER_PARALLEL_CHECKS", "64")
    assert settings.load().exporter.parallel_checks == 64
    for bad in ("0", "257"):
        monkeypatch.setenv("SMS_EXPORTER_PARALLEL_CHECKS", bad)
        with pytest.raises(SMSError, match="SMS_EXPORTER_PARALLEL_CHECKS"):
            settings.load()
