"""``sms host group ...`` (named host selectors) and ``sms host import`` (hosts from an SMS or Ansible
inventory file); docs/fleet.md. ``sms host list --select`` lives with ``sms host list``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sms_plugin.cli.asking import confirm
from sms_plugin.cli import output as shaped
from sms_plugin.cli.console import console
from sms_plugin.cli.output import Output, OutputOption, print_json, print_listing
from sms_plugin.cli.plans import confirm_plan
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    from sms_plugin.cli import backend
else:  # loaded when a verb runs
    backend = lazy_module("sms_plugin.cli.backend")

group_app = typer.Typer(help="Named host groups: selectors kept in the catalog, used as @NAME.", no_args_is_help=True)
out = console(highlight=False)


@group_app.command("add")
def group_add(
    name: Annotated[str, typer.Argument(help="Name of the group (lower case), used as @NAME in selectors.")],
    selector: Annotated[str, typer.Argument(help="What it picks, e.g. 'role=web AND site=eu'.")],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Give an existing group this selector.")] = False,
) -> None:
    """Add a host group (admins)."""
    backend.current().save_host_group(name, selector, description, replace=replace)
    out.print(f"Host group {name} {'replaced' if replace else 'added'}: {selector}", markup=False)


@group_app.command("list")
def group_list(output: OutputOption = Output.table) -> None:
    """List the host groups."""
    print_listing(backend.current().host_groups(), output, shape=shaped.host_group, out=out, columns={
        "name": lambda group: group.name,
        "selector": lambda group: group.selector,
        "description": lambda group: group.description,
    })


@group_app.command("show")
def group_show(name: str, output: OutputOption = Output.table) -> None:
    """Show a host group and the hosts it picks now."""
    door = backend.current()
    group = door.host_group(name)
    if output is Output.json:
        return print_json(shaped.host_group(group, [host.name for host in door.hosts(f"@{name}")]))
    out.print(f"{group.name}: {group.selector}", markup=False)
    if group.description:
        out.print(group.description, markup=False)
    picked = door.hosts(f"@{name}")
    out.print(f"picks {len(picked)} host(s): {' '.join(host.name for host in picked) or '-'}", markup=False)


@group_app.command("remove")
def group_remove(name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Remove a host group (refused while another group refers to it)."""
    if not yes and not confirm(f"Remove host group {name}?"):
        raise typer.Exit(1)
    backend.current().remove_host_group(name)
    out.print(f"Host group {name} removed")


def host_import(
    file: Annotated[Path, typer.Argument(help="An SMS YAML or Ansible INI/YAML inventory file.")],
    format: Annotated[
        str | None, typer.Option("--format", help="sms, ansible-ini or ansible-yaml (default: from the file).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be created or updated.")] = False,
    user: Annotated[str | None, typer.Option("--user", "-u", help="SSH user of hosts that name none.")] = None,
    credentials_from: Annotated[
        str | None,
        typer.Option("--credentials-from", metavar="HOST", help="Existing host whose key/password hosts without a key file share."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Import without asking.")] = False,
) -> None:
    """Create or update SSH hosts (and host groups) from an inventory file. Secrets never come from it."""
    from sms_plugin.errors import InvalidInput
    from sms_plugin.inventory import FORMATS

    if format is not None and format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    door = backend.current()
    planned = door.import_plan(file, format, user=user, credentials_from=credentials_from)  # type: ignore[arg-type]
    notes = [f"skipped   {source}: {reason}" for source, reason in planned.skipped]
    if not confirm_plan(planned, out, verb="Import", dry_run=dry_run, yes=yes,
                        notes=[*notes, *(f"note: {note}" for note in planned.notes)]):
        return
    door.import_apply(planned)
    added = [c.name for c in planned.pending if c.kind == "host" and c.action == "add"]
    out.print(f"Imported {len(planned.pending)} change(s).")
    if added:
        out.print(f"New SSH hosts must be trusted before use: sms host trust NAME ({', '.join(added)})", markup=False)


def register(host_app: typer.Typer) -> None:
    """Adds ``sms host group ...`` and ``sms host import`` to the ``sms host`` commands."""
    host_app.add_typer(group_app, name="group")
    host_app.command("import")(host_import)
