"""``sms access-rule list`` and ``sms webhook list``: the gateway's access rules and webhooks, read
only (admins change them through the REST API: docs/access.md). Through the gateway they are
``GET /api/v1/access-rules`` and ``GET /api/v1/webhooks``, admins only; locally, the catalog's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sms_plugin.cli import output as shaped
from sms_plugin.cli.console import console
from sms_plugin.cli.output import Output, OutputOption, print_listing
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    from sms_plugin.access_listings import AccessRuleInfo
    from sms_plugin.cli import backend
else:  # loaded when a verb runs
    backend = lazy_module("sms_plugin.cli.backend")

rule_app = typer.Typer(help="Access rules: who may do what to which scripts and hosts (read-only here).",
                       no_args_is_help=True)
webhook_app = typer.Typer(help="Webhooks: signed URLs that start a script (read-only here).", no_args_is_help=True)
out = console(highlight=False)


def _conditions(*given: tuple[str, str | None]) -> str:
    return ", ".join(f"{what} {value}" for what, value in given if value is not None) or "any"


def _scripts(rule: AccessRuleInfo) -> str:
    return _conditions(("named", rule.script_glob), ("tagged", rule.script_tag))


def _hosts(rule: AccessRuleInfo) -> str:
    return _conditions(("named", rule.host_glob), ("labelled", rule.host_label))


@rule_app.command("list")
def rule_list(output: OutputOption = Output.table) -> None:
    """List the access rules, oldest first (admins; docs/access.md says what they mean)."""
    print_listing(backend.current().access_rules(), output, shape=shaped.access_rule, out=out, columns={
        "id": lambda rule: str(rule.id),
        "subject": lambda rule: f"{rule.subject_kind} {rule.subject}",
        "actions": lambda rule: " ".join(rule.actions),
        "scripts": _scripts,
        "hosts": _hosts,
        "description": lambda rule: rule.description,
    })


@webhook_app.command("list")
def webhook_list(
    script: Annotated[str | None, typer.Option("--script", "-s", help="Only this script's webhooks.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List the webhooks, oldest first, without their secrets (admins)."""
    print_listing(backend.current().webhooks(script), output, shape=shaped.webhook, out=out, columns={
        "id": lambda hook: hook.id,
        "script": lambda hook: hook.script,
        "enabled": lambda hook: "yes" if hook.enabled else "no",
        "per minute": lambda hook: str(hook.max_per_minute),
        "arguments": lambda hook: " ".join(argument["field"] for argument in hook.arguments),
        "description": lambda hook: hook.description,
    })


def register(app: typer.Typer) -> None:
    """Adds ``sms access-rule ...`` and ``sms webhook ...`` to the ``sms`` command."""
    app.add_typer(rule_app, name="access-rule")
    app.add_typer(webhook_app, name="webhook")
