"""Showing a plan (``sms apply``, ``sms host import``) and asking before it is carried out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from sms_plugin.cli.asking import confirm

if TYPE_CHECKING:
    from sms_plugin.apply import Plan

_COLOURS = {"add": "green", "update": "yellow", "unchanged": "dim"}


def confirm_plan(planned: Plan, out: Console, *, verb: str, dry_run: bool, yes: bool, notes: Iterable[str] = ()) -> bool:
    """Prints the plan's changes (then ``notes``); True when they are to be carried out now: there are
    some, this is no dry run, and ``yes`` or the user said so (no: exit 1)."""
    for change in planned.changes:
        detail = f" ({change.detail})" if change.detail else ""
        out.print(f"[{_COLOURS[change.action]}]{change.action:<9}[/] {change.kind} {change.name}{detail}")
    for note in notes:
        out.print(note, markup=False, highlight=False)
    if not planned.pending:
        out.print("Nothing to change.")
        return False
    if dry_run:
        return False
    if not yes and not confirm(f"{verb} {len(planned.pending)} change(s)?", default=True):
        raise typer.Exit(1)
    return True
