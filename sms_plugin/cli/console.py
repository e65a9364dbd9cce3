"""The CLI's rich consoles: on a terminal as wide as it is; piped (cron, `| grep`), as wide as the
text, so that tables and messages are never wrapped or truncated."""

from __future__ import annotations

import sys

from rich.console import Console

PIPED_WIDTH = 10_000


def console(*, stderr: bool = False, highlight: bool = True) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPED_WIDTH
    return Console(stderr=stderr, highlight=highlight, width=width)
