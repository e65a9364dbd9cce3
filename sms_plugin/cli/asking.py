"""Asking the person at the terminal: confirmations and typed values. Nobody may be there (cron, CI,
``ssh host sms …``): then a confirmation is refused naming the flag that skips it, and a value is read
from stdin or refused, never a hang or a traceback."""

from __future__ import annotations

import sys

import typer

from sms_plugin.errors import SMSError


class Unattended(SMSError):
    """A question nobody can answer: stdin is not a terminal (a usage error: exit status 2)."""


def confirm(question: str, *, default: bool = False, flag: str = "--yes") -> bool:
    """The person's yes or no; without a terminal on stdin, :class:`Unattended` naming ``flag``."""
    if not sys.stdin.isatty():
        raise Unattended(f"{question.rstrip('?')}? needs a confirmation and stdin is not a terminal; "
                         f"pass {flag} to go ahead without asking")
    return typer.confirm(question, default=default)


def ask(label: str, *, hide_input: bool = False) -> str:
    """A typed value; without a terminal, the first line of stdin (``echo "$PW" | sms …``)."""
    try:
        return typer.prompt(label, hide_input=hide_input)
    except typer.Abort:
        if sys.stdin.isatty():
            raise  # Ctrl-D or Ctrl-C at the prompt: "Aborted."
        raise Unattended(f"{label} is needed: stdin is not a terminal and gave no line to read it from") from None
