"""`sms --help` and a verb's --help are declared without the heavy packages (speed: bench/cli_startup.py)."""

from __future__ import annotations

import os

import pytest

from sms_plugin.cli import entry
from tests.cli_imports import HEAVY_FOR_HELP, sms_imports


@pytest.mark.parametrize("args", [("--help",), ("script", "list", "--help"), ("stop", "--help"), ("host", "--help")])
def test_help_imports_no_heavy_package(args, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SMS_HOME": str(tmp_path / ".sms")}
    done, imported = sms_imports(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: sms" in done.stdout
    assert "sms_plugin" in imported  # the probe sees the CLI's own imports
    assert not imported & set(HEAVY_FOR_HELP), sorted(imported & set(HEAVY_FOR_HELP))
    if args == ("--help",):  # the text rendered in advance: not even the CLI's own libraries
        assert not imported & {"typer", "rich", "pydantic"}, sorted(imported & {"typer", "rich", "pydantic"})
        assert done.stdout == entry.HELP.read_text()


def test_the_help_rendered_in_advance_is_the_apps_own():
    assert entry.HELP.read_text() == entry.rendered(), (
        "sms --help changed: regenerate sms_plugin/cli/help.txt with `python -m sms_plugin.cli.entry`")
