"""Host labels through the real `sms` command and a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sms_plugin import hosts as host_services

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
