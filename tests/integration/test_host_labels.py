"""Host labels through the real `sms` command and a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from sms_plugin import hosts as host_services
from sms_plugin.errors import Conflict
from sms_plugin.host_kinds import SSHHost

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))


def sms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMS, *args], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})


async def test_sms_host_add_label(prefect_server):
    name = f"lab-{uuid.uuid4().hex[:6]}"
    added = sms("host", "add", name, "--local", "--label", "prod-eu", "-l", "rack.7")
    assert added.returncode == 0, added.stderr
    [info] = [host for host in await host_services.listing() if host.name == name]
    assert info.labels == ("prod-eu", "rack.7")
    listed = sms("host", "list")
    assert "prod-eu rack.7" in listed.stdout
    refused = sms("host", "add", f"{name}-x", "--local", "--label", "no spaces")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: invalid host label(s) ['no spaces']") and "Traceback" not in refused.stderr


async def test_overwriting_a_host_with_another_kind_is_refused_and_changes_nothing(prefect_server):
    name = f"kind-{uuid.uuid4().hex[:6]}"
    assert sms("host", "add", name, "--local", "--label", "first").returncode == 0
    ssh = SSHHost(address="192.0.2.9", username="ops", password=SecretStr("pw"))
    with pytest.raises(Conflict, match=f"host {name!r} is a local host; a host keeps its kind"):
        await host_services.add(name, ssh, overwrite=True)
    [info] = [host for host in await host_services.listing() if host.name == name]  # one host, as it was
    assert (info.kind, info.labels) == ("local", ("first",))
