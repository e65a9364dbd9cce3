"""The ``sms`` command's entry point: ``sms --help`` prints the top-level help rendered in advance
(``help.txt``, a test keeps it equal to what the app renders), so that it answers without importing
typer, rich or any verb; everything else goes to :func:`sms_plugin.cli.app.main`.

Regenerate the text after changing a verb's one-line help: ``python -m sms_plugin.cli.entry``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELP = Path(__file__).with_name("help.txt")
HELP_WIDTH = 100


def main() -> None:
    """Entry point of the ``sms`` command."""
    if sys.argv[1:] == ["--help"]:
        sys.stdout.write(HELP.read_text())
        return
    from sms_plugin.cli.app import main as run

    run()


def rendered() -> str:
    """The top-level help as the app renders it now, without colour, ``HELP_WIDTH`` columns wide."""
    from typer.testing import CliRunner

    from sms_plugin.cli.app import app

    done = CliRunner().invoke(app, ["--help"], prog_name="sms", terminal_width=HELP_WIDTH,
                              env={"COLUMNS": str(HELP_WIDTH), "NO_COLOR": "1", "TERM": "dumb"})
    if done.exit_code != 0:
        raise RuntimeError(f"sms --help failed: {done.output}")
    return done.output


if __name__ == "__main__":
    HELP.write_text(rendered())
    print(f"wrote {HELP}")
