"""The exporter's host probe does no harm to the servers it watches: by default it never presents
credentials, so a host whose stored password is wrong sees no failed login at all (counted in the
real sshd's own log); with login checks on, a refused login is not tried again within the hour."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sms_plugin import hosts as host_services
from sms_plugin.host_kinds import build
from sms_plugin.telemetry.exporter import Exporter, ExporterSettings

pytestmark = pytest.mark.integration


def failed_logins(ssh_server: Any) -> int:
    """Failed authentications sshd has logged so far (LogLevel VERBOSE, its log file)."""
    text = ssh_server.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if line.startswith("Failed ") and " for " in line)


def host_up(exporter: Exporter, name: str) -> float | None:
    return next((sample.value for metric in exporter.service.host_up.collect() for sample in metric.samples
                 if sample.labels["host"] == name), None)


@pytest.fixture
async def wrong_password_host(prefect_server: Any, ssh_server: Any) -> str:
    """An SSH host with the server's real (pinned) key and a wrong password."""
    name = f"wrong-pw-{uuid.uuid4().hex[:8]}"
    key_line = " ".join(ssh_server.host_public_keys[0].split()[:2])
    await host_services.add(name, build("ssh", {
        "address": ssh_server.host, "port": ssh_server.port, "username": ssh_server.username,
        "password": "not-the-password", "host_keys": [key_line],
    }))
    return name


async def test_the_default_probe_never_logs_in(wrong_password_host, ssh_server):
    exporter = Exporter(ExporterSettings(login_check=False))
    before = failed_logins(ssh_server)
    await exporter.probe()
    await exporter.probe()
    assert host_up(exporter, wrong_password_host) == 1.0  # reachable, with the trusted key
    assert failed_logins(ssh_server) == before, "the probe presented credentials"


async def test_a_failed_login_check_is_not_retried_within_the_hour(wrong_password_host, ssh_server):
    exporter = Exporter(ExporterSettings(login_check=True))
    before = failed_logins(ssh_server)
    await exporter.probe()
    assert host_up(exporter, wrong_password_host) == 0.0
    after_first = failed_logins(ssh_server)
    assert after_first > before  # the one login check this hour really was refused by sshd
    await exporter.probe()
    await exporter.probe()
    assert host_up(exporter, wrong_password_host) == 0.0  # still down: nothing has proven otherwise
    assert failed_logins(ssh_server) == after_first, "a refused credential was tried again within the hour"


async def test_host_check_still_logs_in_when_a_person_asks(wrong_password_host, ssh_server):
    result = await host_services.check(wrong_password_host)
    assert result.reachable and result.host_key == "match" and not result.authenticated
    assert any("login failed" in problem for problem in result.problems), result.problems
