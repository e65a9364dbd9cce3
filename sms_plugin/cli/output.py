"""``--output json``: what list and show commands print for programs, in a stable schema
(docs/cli.md). The shapes are built here, field by field, so a change of an internal class never
changes what a script reading ``sms … -o json`` gets; they use the REST API's field names.
:func:`print_listing` answers a list command either way: JSON, or a table for people."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sms_plugin.access_listings import AccessRuleInfo, WebhookInfo
    from sms_plugin.cli.backend import Version
    from sms_plugin.host_listings import HostGroupInfo, HostInfo
    from sms_plugin.host_kinds.checks import HostCheck
    from sms_plugin.run_results import RunResult, RunSummary
    from sms_plugin.schedules import Preview
    from sms_plugin.scripts import ScriptSpec


class Output(str, enum.Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table (for people) or json (for programs; schema in docs/cli.md).")
]


T = TypeVar("T")


def print_listing(items: Sequence[T], output: Output, *, shape: Callable[[T], dict[str, Any]],
                  columns: dict[str, Callable[[T], str]], out: Console) -> None:
    """A list command's answer: with ``--output json`` an array of ``shape(item)``, else a table whose
    ``columns`` map each heading to the item's cell (as wide as its text when piped)."""
    if output is Output.json:
        return print_json([shape(item) for item in items])
    table = Table(*columns)
    for item in items:
        table.add_row(*(Text(cell(item)) for cell in columns.values()))  # names and descriptions are no markup
    out.print(table)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (datetimes in ISO 8601, UTC as stored)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=_encoded) + "\n")


def _encoded(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def host(info: HostInfo) -> dict[str, Any]:
    return {"name": info.name, "kind": info.kind, "where": info.where, "pinned_keys": info.pinned_keys,
            "legacy": info.legacy, "labels": list(info.labels), "admins_only": info.admins_only,
            "max_parallel_sessions": info.max_parallel_sessions, "settings": info.settings}


def host_check(result: HostCheck) -> dict[str, Any]:
    return {**dataclasses.asdict(result), "usable": result.usable}


def host_group(info: HostGroupInfo, hosts: list[str] | None = None) -> dict[str, Any]:
    shown = {"name": info.name, "selector": info.selector, "description": info.description,
             "created_by": info.created_by, "created_at": info.created_at, "updated_at": info.updated_at}
    return shown if hosts is None else {**shown, "hosts": hosts}


def script(spec: ScriptSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def version(shown: Version) -> dict[str, Any]:
    fields = {"number": shown.number, "sha256": shown.sha256, "author": shown.author,
              "created_at": shown.created_at, "comment": shown.comment}
    return fields if shown.content is None else {**fields, "content": shown.content}


def run_result(result: RunResult) -> dict[str, Any]:
    return {"run_id": result.run_id, "state": result.state, "message": result.message, "exit_code": result.exit_code,
            "output_tail": result.output_tail, "hosts": [dataclasses.asdict(host) for host in result.hosts]}


def run_summary(run: RunSummary) -> dict[str, Any]:
    return dataclasses.asdict(run)


def schedule_preview(shown: Preview) -> dict[str, Any]:
    return {"cron": shown.cron, "timezone": shown.timezone, "explanation": shown.explanation,
            "next_runs": shown.next_runs, "shortest_gap_seconds": shown.shortest_gap_seconds}


def access_rule(rule: AccessRuleInfo) -> dict[str, Any]:
    return {"id": rule.id, "subject_kind": rule.subject_kind, "subject": rule.subject, "actions": list(rule.actions),
            "script_glob": rule.script_glob, "script_tag": rule.script_tag, "host_glob": rule.host_glob,
            "host_label": rule.host_label, "description": rule.description, "created_by": rule.created_by,
            "created_at": rule.created_at}


def webhook(hook: WebhookInfo) -> dict[str, Any]:
    return {"id": hook.id, "path": hook.path, "script": hook.script, "description": hook.description,
            "arguments": hook.arguments, "max_per_minute": hook.max_per_minute, "enabled": hook.enabled,
            "created_by": hook.created_by, "created_at": hook.created_at}
