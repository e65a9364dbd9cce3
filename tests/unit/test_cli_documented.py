"""docs/cli.md's table "Every command" has a row for every command of the `sms` app, and no row for
a command the app does not have; the --output json commands are those the table marks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from sms_plugin.cli.app import app

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
ROW = re.compile(r"^\| `sms ([a-z -]+?)(?: [A-Z][A-Z_ ]*)?` \|.*\|([^|]*)\|$", re.M)


def commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf command by its path (``host group add``); ``run start`` is documented as ``run``."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group (typer's click)
            found.update(commands(command, f"{path} "))
        else:
            found[{"run start": "run", "logs show": "logs"}.get(path, path)] = command
    return found


def documented() -> dict[str, str]:
    table = DOC.split("## Every command", 1)[1].split("\n## ", 1)[0]
    return {match[1]: match[2].strip() for match in ROW.finditer(table)}


def test_every_command_has_a_row_and_every_row_a_command():
    app_commands = commands(typer.main.get_command(app))
    assert set(app_commands) == set(documented())


def test_the_rows_marked_json_are_the_commands_with_output_json():
    app_commands = commands(typer.main.get_command(app))
    with_json = {path for path, command in app_commands.items() if any("--output" in p.opts for p in command.params)}
    assert with_json == {path for path, json in documented().items() if json == "yes"}
