"""``sms host add-windows``: a Windows server reached over WinRM (see docs/windows.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sms_plugin.cli.asking import ask
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    from sms_plugin.cli import backend
else:  # loaded when the verb runs
    backend = lazy_module("sms_plugin.cli.backend")


def host_add_windows(
    name: Annotated[str, typer.Argument(help="Name of the host (lower case).")],
    address: Annotated[str, typer.Option("--address", help="Host name or IP address of the server.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Account (user, DOMAIN\\user or user@domain).")],
    https: Annotated[bool, typer.Option("--https", help="WinRM over HTTPS (port 5986) instead of HTTP with message encryption.")] = False,
    port: Annotated[int | None, typer.Option("--port", "-p", help="WinRM port (default 5985 http, 5986 https).")] = None,
    auth: Annotated[str, typer.Option("--auth", help="negotiate, ntlm, kerberos, credssp, or basic (https only).")] = "negotiate",
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="PEM of the CA that signed the server certificate.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a host of the same name.")] = False,
    label: Annotated[
        list[str], typer.Option("--label", "-l", help="Label access rules select it by, e.g. prod-eu (repeatable).")
    ] = [],  # noqa: B006
) -> None:
    """Add a Windows host (WinRM). The password is prompted for, never taken from the command line."""
    from sms_plugin.host_kinds import build

    password = ask("Password", hide_input=True)
    block = build("windows", {  # refuses Basic over HTTP before anything is saved
        "address": address, "port": port, "scheme": "https" if https else "http", "auth": auth, "username": user,
        "password": password, "ca_path": str(ca_file.expanduser().resolve()) if ca_file else None, "labels": label,
    })
    backend.current().add_host(name, block, overwrite=overwrite)
    Console().print(f"Host {name} saved ({block.describe()}); check it with: sms host check {name}")


