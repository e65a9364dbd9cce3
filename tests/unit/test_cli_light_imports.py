"""`sms --help` and a verb's --help are declared without the heavy packages (speed: bench/cli_startup.py)."""

from __future__ import annotations

import os

import pytest

from tests.cli_imports import HEAVY_FOR_HELP, sms_imports


@pytest.mark.parametrize("args", [("--help",), ("script", "list", "--help"), ("stop", "--help"), ("host", "--help")])
def test_help_imports_no_heavy_package(args, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SMS_HOME": str(tmp_path / ".sms")}
    done, imported = sms_imports(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: sms" in done.stdout
    assert "typer" in imported  # the probe sees the CLI's own imports
    assert not imported & set(HEAVY_FOR_HELP), sorted(imported & set(HEAVY_FOR_HELP))
