"""The ``sms`` command line. Every command is a thin face over the service modules.

Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from sms_plugin.cli import access as access_cli
from sms_plugin.cli import checks
from sms_plugin.cli import fleet as fleet_cli
from sms_plugin.cli.asking import Unattended, ask, confirm
from sms_plugin.cli import output as shaped
from sms_plugin.cli.console import console
from sms_plugin.cli.output import Output, OutputOption, print_json, print_listing
from sms_plugin.cli.logs import SplitStderrOption, TailOption
from sms_plugin.cli.plans import confirm_plan
from sms_plugin.cli import logs as _logs
from sms_plugin.cli import windows as windows_cli
from sms_plugin.cli.events import events as _events
from sms_plugin.cli.exporter import exporter as _exporter
from sms_plugin.cli.gateway import gateway as _gateway
from sms_plugin.cli.gateway import login as _login
from sms_plugin.cli.gateway import logout as _logout
from sms_plugin.cli.worker import worker as worker_command
from sms_plugin.errors import InvalidInput, RefusedSetting, SMSError
from sms_plugin.lazy import lazy_module
from sms_plugin.selectors import SelectorError

if TYPE_CHECKING:
    from sms_plugin import hosts as host_services
    from sms_plugin.cli import backend, fleet_run
else:  # loaded by the verbs that use them: `sms --help` imports neither Prefect nor the catalog
    host_services = lazy_module("sms_plugin.hosts")
    backend = lazy_module("sms_plugin.cli.backend")
    fleet_run = lazy_module("sms_plugin.cli.fleet_run")  # rich's live display: fleet runs only

app = typer.Typer(
    name="sms",
    help="SMS, the Script Management System: add, start, stop, schedule and watch scripts on your servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
host_app = typer.Typer(help="Hosts where scripts run (Prefect blocks).", no_args_is_help=True)
script_app = typer.Typer(help="Scripts in the catalog.", no_args_is_help=True)
app.add_typer(host_app, name="host")
app.add_typer(script_app, name="script")

out = console()
err = console(stderr=True)


@app.callback()
def _options(
    context: typer.Context,
    local: Annotated[
        bool,
        typer.Option("--local", envvar="SMS_LOCAL", help="Use this machine's catalog and Prefect even after `sms login`."),
    ] = False,
) -> None:
    """After `sms login`, every verb goes through the gateway; `sms logout` or --local use the local catalog."""
    from sms_plugin import settings, tls  # read once here, for the verb (not for --help)

    context.with_resource(settings.installed(settings.load()))
    context.with_resource(tls.prefect_trust())  # Prefect's clients verify its HTTPS with SMS_CA_BUNDLE
    backend.force_local(local)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} must look like NAME=VALUE, not {value!r}")
        result[key] = rest
    return result


PARAM_HELP = (
    "Declared parameter NAME[:TYPE][!][=DEFAULT] (TYPE string|integer|number|boolean|secret; '!' required), "
    "or a JSON object of its fields (choices, pattern, description); repeatable, in argument order."
)
_PARAM = re.compile(r"(?P<name>[^:!=]+)(?::(?P<type>[a-z]+))?(?P<required>!)?(?:=(?P<default>.*))?", re.DOTALL)


def _declared(values: list[str]) -> list[dict[str, Any]]:
    """``--param`` values as ParameterSpec fields: ``days:integer=7``, ``token:secret!`` or JSON."""
    declared = []
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                declared.append(json.loads(value))
            except json.JSONDecodeError as error:
                raise InvalidInput(f"--param {value!r} is not valid JSON: {error}") from None
            continue
        match = _PARAM.fullmatch(value)
        if match is None:
            raise InvalidInput(f"--param must look like NAME[:TYPE][!][=DEFAULT], not {value!r}")
        kind = match["type"] or "string"
        fields: dict[str, Any] = {"name": match["name"], "type": "string" if kind == "secret" else kind,
                                  "secret": kind == "secret", "required": bool(match["required"])}
        if match["default"] is not None:
            fields["default"] = match["default"]
        declared.append(fields)
    return declared


# ---------------------------------------------------------------- hosts


@host_app.command("add")
def host_add(
    name: Annotated[str, typer.Argument(help="Name of the host (lower case).")],
    ssh: Annotated[str | None, typer.Option("--ssh", metavar="ADDRESS", help="Address of an SSH server.")] = None,
    local: Annotated[bool, typer.Option("--local", help="The worker's own machine.")] = False,
    user: Annotated[str | None, typer.Option("--user", "-u", help="SSH user name.")] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="SSH port.")] = 22,
    key_file: Annotated[Path | None, typer.Option("--key-file", "-i", help="Private key file.")] = None,
    ask_password: Annotated[bool, typer.Option("--ask-password", help="Prompt for a password.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a host of the same name.")] = False,
    legacy: Annotated[
        bool,
        typer.Option("--legacy", help="Old server: allow SHA-1 kex, ssh-rsa, CBC ciphers, hmac-sha1 (weaker)."),
    ] = False,
    label: Annotated[
        list[str], typer.Option("--label", "-l", help="Label access rules select it by, e.g. prod-eu (repeatable).")
    ] = [],  # noqa: B006
) -> None:
    """Add an SSH or local host (Windows: `sms host add-windows`). SSH hosts must then be trusted: `sms host trust NAME`."""
    from sms_plugin.host_kinds import build

    if bool(ssh) == local:
        raise InvalidInput("give exactly one of --ssh ADDRESS or --local")
    if local:
        block = build("local", {"labels": label})
    else:
        if not user:
            raise InvalidInput("an SSH host needs --user")
        key = key_file.expanduser().read_text() if key_file else None
        password = ask("Password", hide_input=True) if ask_password else None
        block = build("ssh", {"address": ssh, "port": port, "username": user, "private_key": key, "password": password,
                              "legacy": legacy, "labels": label})
    backend.current().add_host(name, block, overwrite=overwrite)
    hint = "" if local else f"; now check and pin its host key: sms host trust {name}"
    out.print(f"Host {name} saved ({block.describe()}){hint}")


host_app.command("add-windows")(windows_cli.host_add_windows)
fleet_cli.register(host_app)


@host_app.command("list")
def host_list(
    select: Annotated[
        str | None, typer.Option("--select", "-s", help="Only the hosts this selector picks, e.g. 'role=web AND NOT legacy'.")
    ] = None,
    output: OutputOption = Output.table,
) -> None:
    """List the hosts, or preview what a host selector picks (docs/fleet.md)."""
    hosts = backend.current().hosts(select)
    if output is Output.json:
        return print_json([shaped.host(host) for host in hosts])
    if select is not None and not hosts:
        out.print(f"No host matches the selector {select!r}.", markup=False, highlight=False)
        return
    table = Table("name", "kind", "where", "pinned keys", "algorithms", "labels")
    for host in hosts:
        table.add_row(  # host keys and algorithms where the kind has them (its public settings say)
            host.name, host.kind, host.where, str(host.pinned_keys) if "host_keys" in host.settings else "-",
            ("[yellow]legacy[/]" if host.legacy else "modern") if "legacy" in host.settings else "-",
            " ".join(host.labels),
        )
    out.print(table)


@host_app.command("check")
def host_check(name: str, output: OutputOption = Output.table) -> None:
    """Check a host: reachable, login, host key, SSH algorithms, login shell, interpreters. Exit 1 if unusable."""
    result = backend.current().check_host(name)
    if output is Output.json:
        print_json(shaped.host_check(result))
        raise typer.Exit(0 if result.usable else 1)

    def row(label: str, value: str) -> None:
        out.print(f"  {label:<13} {value}", markup=False, highlight=False)

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    out.print(f"{result.name}: {result.kind} host, {result.where}" + (" (legacy algorithms allowed)" if result.legacy else ""),
              markup=False, highlight=False)
    row("reachable", yes(result.reachable))
    row("logged in", yes(result.authenticated))
    if result.kind == "ssh":
        row("host key", result.host_key + (f" ({result.host_key_fingerprint})" if result.host_key_fingerprint else ""))
        if result.server_version:
            row("server", result.server_version)
            row("algorithms", f"kex {result.kex}, host key {result.host_key_type}, cipher {result.cipher}, mac {result.mac}")
    if result.authenticated:
        row("login shell", result.login_shell or "?")
        row("interpreters", ", ".join(f"{n} {p or '(missing)'}" for n, p in result.interpreters.items()) or "?")
        row("system", result.uname or "?")
    row("checked in", f"{result.seconds:.2f} s")
    for note in result.notes:
        out.print(f"  note: {note}", markup=False, highlight=False)
    for problem in result.problems:
        out.print(f"  problem: {problem}", markup=False, highlight=False)
    if not result.usable:
        out.print(f"{result.name} is NOT usable.", markup=False, highlight=False)
        raise typer.Exit(1)
    out.print(f"{result.name} is usable.", markup=False, highlight=False)


@host_app.command("trust")
def host_trust(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Pin without asking.")] = False,
) -> None:
    """Show an SSH host's key fingerprint and pin the key after you confirm it."""
    door = backend.current()
    key = door.scan_host_key(name)
    out.print(f"{name} shows the host key {key.line.split()[0]} {key.fingerprint}")
    if not yes and not confirm("Is this the server's real key? Pin it"):
        err.print("Not pinned.")
        raise typer.Exit(1)
    door.trust_host_key(name, key.fingerprint)  # only if the host still shows the key confirmed
    out.print(f"Pinned; SMS now connects to {name} and refuses any other key.")


# ---------------------------------------------------------------- scripts


@script_app.command("add")
def script_add(
    name: str,
    interpreter: Annotated[str, typer.Option("--interpreter", "-t", help="bash, sh, ksh, python3 or original.")],
    host: Annotated[str | None, typer.Option("--host", "-h", help="The host it runs on.")] = None,
    targets: Annotated[
        str | None, typer.Option("--targets", metavar="SELECTOR", help="Instead of --host: the hosts a selector picks at each run.")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="The script's source file.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Absolute path on the server (original).")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    arg: Annotated[list[str], typer.Option("--arg", "-a", help="Default argument (repeatable).")] = [],  # noqa: B006
    env: Annotated[list[str], typer.Option("--env", "-e", help="NAME=VALUE (repeatable).")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", help=PARAM_HELP)] = [],  # noqa: B006
    allow_env: Annotated[
        list[str], typer.Option("--allow-env", metavar="NAME", help="A variable a run may set (repeatable).")
    ] = [],  # noqa: B006
    workdir: Annotated[str | None, typer.Option("--workdir", help="Working directory on the host.")] = None,
    timeout: Annotated[int | None, typer.Option("--timeout", min=1, help="Seconds before the run is killed.")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Prefect retries after a failure.")] = 0,
    single_instance: Annotated[
        str,
        typer.Option(
            "--single-instance",
            metavar="off|queue|reject",
            help="A second start while it runs: off (runs in parallel), queue (waits), reject (refused).",
        ),
    ] = "off",
    kill_grace: Annotated[
        int, typer.Option("--kill-grace", metavar="SECONDS", min=0, help="Seconds between TERM and KILL on stop.")
    ] = 5,
    cron: Annotated[list[str], typer.Option("--cron", help="Cron schedule (repeatable).")] = [],  # noqa: B006
    every: Annotated[int | None, typer.Option("--every", min=1, help="Run every N seconds (at least SMS_SCHEDULE_MIN_SECONDS).")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the schedules.")] = "UTC",
    tag: Annotated[list[str], typer.Option("--tag", help="Tag (repeatable).")] = [],  # noqa: B006
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it paused.")] = False,
) -> None:
    """Add a script to the catalog; it becomes the Prefect deployment run-script/NAME. Every setting is
    checked first (exit 2, nothing added); a cron schedule's next runs are shown."""
    schedules: list[dict[str, Any]] = [{"cron": c, "timezone": timezone} for c in cron]
    if every:
        schedules.append({"interval_seconds": every, "timezone": timezone})
    door = backend.current()
    spec = checks.checked_spec(door, {
        "name": name,
        "interpreter": interpreter,
        "host": host,
        "targets": targets,
        "path": path,
        "description": description,
        "default_args": arg,
        "env": _pairs(env, "--env"),
        "parameters": _declared(param),
        "allowed_env": allow_env,
        "working_dir": workdir,
        "timeout_seconds": timeout,
        "retries": retries,
        "single_instance": single_instance,
        "kill_grace_seconds": kill_grace,
        "schedules": schedules,
        "tags": tag,
        "enabled": not disabled,
    })
    content = file.read_text(encoding="utf-8") if file else None
    door.add_script(spec, content)
    out.print(f"Script {spec.name} added; deployment run-script/{spec.name} is ready", markup=False, highlight=False)
    for schedule in spec.schedules:
        if (preview := checks.preview_of(schedule)) is not None:
            _print_preview(preview)


def _print_preview(preview: Any) -> None:
    out.print(f"cron {preview.cron!r} ({preview.explanation}), next runs ({preview.timezone}): "
              + ", ".join(f"{fire:%Y-%m-%d %H:%M}" for fire in preview.next_runs), markup=False, highlight=False)


@script_app.command("set")
def script_set(
    name: str,
    host: Annotated[str | None, typer.Option("--host", "-h", help="Run on this host from now on.")] = None,
    targets: Annotated[
        str | None, typer.Option("--targets", metavar="SELECTOR", help="Run on the hosts this selector picks at each run.")
    ] = None,
) -> None:
    """Change where a script runs: one host (--host) or the hosts a selector picks (--targets)."""
    if (host is None) == (targets is None):
        raise InvalidInput("give exactly one of --host HOST or --targets SELECTOR")
    door = backend.current()
    if host is not None:
        checks.require_host(door, host)
    door.set_script_target(name, host=host, targets=targets)
    out.print(f"Script {name} now runs on " + (host or f"the hosts {targets!r} picks at each run"), markup=False,
              highlight=False)


schedule_app = typer.Typer(help="Cron schedules, judged before they are saved.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("preview")
def schedule_preview(
    cron: Annotated[str, typer.Argument(help="A cron expression, e.g. '0 3 * * MON-FRI'.")],
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the schedule.")] = "UTC",
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=50, help="How many next runs.")] = 5,
    output: OutputOption = Output.table,
) -> None:
    """The next runs of a cron schedule, and whether SMS accepts it (exit 2 if not: SMS_SCHEDULE_MIN_SECONDS)."""
    from sms_plugin.schedules import preview

    shown = preview(cron, timezone, count)
    if output is Output.json:
        return print_json(shaped.schedule_preview(shown))
    _print_preview(shown)


@script_app.command("push")
def script_push(
    name: str,
    file: Annotated[Path, typer.Argument(help="The new source.")],
    comment: Annotated[str, typer.Option("--comment", "-m")] = "",
) -> None:
    """Store a new version of a script's source (nothing happens if it is unchanged)."""
    number = backend.current().push(name, file.read_text(encoding="utf-8"), comment)
    if number:
        out.print(f"{name}: version {number} stored")
    else:
        out.print(f"{name}: unchanged, same content as the newest version")


@script_app.command("list")
def script_list(
    tag: Annotated[str | None, typer.Option("--tag", help="Only scripts with this tag.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List the scripts."""
    print_listing(backend.current().scripts(tag), output, shape=shaped.script, out=out, columns={
        "name": lambda script: script.name,
        "interpreter": lambda script: script.interpreter,
        "host": lambda script: script.host or f"targets: {script.targets}",
        "schedules": lambda script: ", ".join(s.cron or f"every {s.interval_seconds}s" for s in script.schedules),
        "enabled": lambda script: "yes" if script.enabled else "no",
        "tags": lambda script: " ".join(script.tags),
    })


@script_app.command("show")
def script_show(name: str, output: OutputOption = Output.table) -> None:
    """Show a script's settings and newest version."""
    spec, newest = backend.current().script(name)
    if output is Output.json:
        return print_json({**shaped.script(spec), "newest_version": shaped.version(newest) if newest else None})
    for key, value in spec.model_dump().items():
        out.print(f"[bold]{key}[/]: {value}")
    if newest:
        out.print(f"[bold]version[/]: {newest.number} ({newest.sha256[:12]}, {newest.author}, {newest.created_at:%Y-%m-%d %H:%M} UTC)")
        out.print(newest.content, markup=False, highlight=False)


@script_app.command("versions")
def script_versions(name: str, output: OutputOption = Output.table) -> None:
    """List a script's versions, newest first."""
    print_listing(backend.current().versions(name), output, shape=shaped.version, out=out, columns={
        "version": lambda version: str(version.number),
        "sha256": lambda version: version.sha256[:12],
        "author": lambda version: version.author,
        "created (UTC)": lambda version: f"{version.created_at:%Y-%m-%d %H:%M}",
        "comment": lambda version: version.comment,
    })


@script_app.command("rm")
def script_rm(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove a script and its deployment (run records and the audit trail stay)."""
    if not yes and not confirm(f"Remove script {name} and its deployment?"):
        raise typer.Exit(1)
    backend.current().remove_script(name)
    out.print(f"Script {name} removed")


# ---------------------------------------------------------------- runs


class _StartByDefault(TyperGroup):
    """``sms run show RUN_ID`` (a run id after ``show``) shows a run; anything else starts a script."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, run_command_args(args))


def run_command_args(args: list[str]) -> list[str]:
    """``args`` of ``sms run`` with the sub-command first: ``show`` before a run id, ``list`` alone or
    before an option, else ``start``."""
    if args[:1] == ["show"] and len(args) > 1 and (_RUN_ID.fullmatch(args[1]) or args[1] in ("--help", "-h")):
        return args
    if args[:1] == ["list"] and (len(args) == 1 or args[1].startswith("-")):
        return args
    return ["start", *args]


STOP_POLL_SECONDS = 0.1
"""How often ``sms stop --wait`` looks whether the run's processes are gone."""

_RUN_ID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


run_app = typer.Typer(cls=_StartByDefault, help="Start a script (`sms run NAME`), show a run (`sms run show RUN_ID`) or list runs (`sms run list`).",
                      no_args_is_help=True)
app.add_typer(run_app, name="run")


@run_app.command("start")
def run(
    name: str,
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (after --).")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait; exit with the script's exit code (fleet: 0 only if every host succeeded).")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Run on another host.")] = None,
    hosts: Annotated[
        str | None, typer.Option("--hosts", metavar="SELECTOR", help="A fleet run on every host the selector picks, e.g. 'role=web AND NOT legacy'.")
    ] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", min=1, help="Fleet: hosts at a time (default 50).")] = None,
    batch: Annotated[
        str | None, typer.Option("--batch", metavar="N|N%", help="Fleet: rolling batches of N hosts (or N% of them).")
    ] = None,
    batch_pause: Annotated[
        float | None, typer.Option("--batch-pause", metavar="SECONDS", min=0, help="Fleet: pause between batches.")
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option("--max-failures", metavar="N|N%", help="Fleet: once more hosts failed, start no more and fail the run."),
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Fleet: start no more hosts after the first failure.")] = False,
    deadline: Annotated[
        float | None,
        typer.Option("--deadline", metavar="SECONDS", min=0, help="Fleet: after this long, stop the running hosts and skip the rest."),
    ] = None,
    version: Annotated[int | None, typer.Option("--version", help="Run this version.")] = None,
    env: Annotated[list[str], typer.Option("--env", "-e", help="NAME=VALUE (repeatable).")] = [],  # noqa: B006
    param: Annotated[
        list[str], typer.Option("--param", "-p", help="A declared parameter: NAME=VALUE (repeatable).")
    ] = [],  # noqa: B006
    timeout: Annotated[float | None, typer.Option("--wait-timeout", help="Give up waiting after N s.")] = None,
    tail: TailOption = None,
    split_stderr: SplitStderrOption = False,
) -> None:
    """Start a script: sms run NAME [--wait] [--hosts SELECTOR] [-p NAME=VALUE]... [-- ARGS...]
    (show a run: sms run show RUN_ID). With --wait, stdout is the script's output, byte for byte (docs/cli.md)."""
    policy = fleet_run.policy_of(parallel=parallel, batch=batch, batch_pause=batch_pause, max_failures=max_failures,
                                 fail_fast=fail_fast, deadline=deadline)
    if policy and hosts is None:
        raise InvalidInput("--parallel, --batch, --batch-pause, --max-failures, --fail-fast and --deadline need --hosts SELECTOR")
    door = backend.current()
    run_id = door.start(
        name, args=args or None, env=_pairs(env, "--env") or None, host=host, version=version,
        parameters=_pairs(param, "--param") or None, hosts=hosts, policy=policy,
    )
    if not wait:
        out.print(f"Run {run_id} started", highlight=False)
        return
    if hosts is not None:
        out.print(f"Run {run_id} started", highlight=False)
        result = fleet_run.follow(lambda: door.result(run_id), out, timeout=timeout)
        out.print(fleet_run.summary(result), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(0 if result.ok else 1)
    err.print(f"sms: run {run_id} started", markup=False, highlight=False)
    _logs.print_output(door.logs(run_id, follow=True, timeout=timeout), run_id, tail=tail, split_stderr=split_stderr)
    result = door.result(run_id)
    if not result.ok or sys.stderr.isatty():
        err.print(f"sms: run {run_id} {result.state}" + (f": {result.message}" if result.message else ""),
                  markup=False, highlight=False, soft_wrap=True)
    if result.ok:
        raise typer.Exit(0)
    raise typer.Exit(result.exit_code if result.exit_code else 1)


@run_app.command("show")
def run_show(run_id: str, output: OutputOption = Output.table) -> None:
    """Show a run: its state, exit code, output tail, and per host (a fleet run) how it went."""
    result = backend.current().result(run_id)
    if output is Output.json:
        return print_json(shaped.run_result(result))
    out.print(f"run {run_id}: {result.state}" + (f": {result.message}" if result.message else ""),
              markup=False, highlight=False, soft_wrap=True)
    if result.exit_code is not None:
        out.print(f"exit code {result.exit_code}", highlight=False)
    if result.hosts:
        out.print(fleet_run.hosts_table(result))
    for line in result.output_tail:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@run_app.command("list")
def run_list(
    script: Annotated[str | None, typer.Option("--script", "-s", help="Only this script's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="At most this many runs.")] = 50,
    output: OutputOption = Output.table,
) -> None:
    """List runs, newest first (those that reached the flow; their state: sms run show RUN_ID)."""
    print_listing(backend.current().runs(script, limit), output, shape=shaped.run_summary, out=out, columns={
        "run id": lambda run: run.run_id,
        "script": lambda run: run.script,
        "host": lambda run: run.host,
        "version": lambda run: "" if run.version is None else str(run.version),
        "exit code": lambda run: "" if run.exit_code is None else str(run.exit_code),
        "created (UTC)": lambda run: f"{run.created_at:%Y-%m-%d %H:%M:%S}",
        "ended (UTC)": lambda run: f"{run.ended_at:%Y-%m-%d %H:%M:%S}" if run.ended_at else "",
        "by": lambda run: f"{run.requested_by} ({run.trigger})",
    })


@app.command("stop")
def stop(
    run_id: str,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Return once the run's processes are gone.")] = False,
    timeout: Annotated[float | None, typer.Option("--wait-timeout", help="Give up waiting after N s.")] = None,
) -> None:
    """Stop a run: Prefect cancels it and the remote process tree is killed.

    Returns once the cancel is accepted (--wait: once the processes are gone); the run reads
    Cancelled soon after."""
    door = backend.current()
    began = time.monotonic()
    state = door.stop(run_id)
    out.print(f"Run {run_id}: {state.lower()}", highlight=False)
    if not wait or state == "CANCELLED":
        return
    while not (result := door.result(run_id)).ended and not (result.hosts and all(h.ended for h in result.hosts)):
        if timeout is not None and time.monotonic() - began > timeout:
            raise TimeoutError("gave up waiting")
        time.sleep(STOP_POLL_SECONDS)
    out.print(f"Run {run_id}: its processes are gone ({time.monotonic() - began:.1f} s after the stop)", highlight=False)


# ---------------------------------------------------------------- catalog as a whole


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="A YAML file or a folder of them.")] = Path("deployments"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would change.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
) -> None:
    """Show what a declarative catalog would change, then apply it (idempotent)."""
    door = backend.current()
    planned = door.plan(path)
    if not confirm_plan(planned, out, verb="Apply", dry_run=dry_run, yes=yes):
        return
    door.apply(planned)
    out.print(f"Applied {len(planned.pending)} change(s).")


@app.command("sync")
def sync() -> None:
    """Make Prefect's deployments match the catalog."""
    report = backend.current().sync()
    out.print(f"{len(report.deployed)} deployment(s) in place; removed: {', '.join(report.removed) or 'none'}")


@app.command("up")
def up(
    catalog_path: Annotated[Path, typer.Option("--catalog", help="Declarative catalog to apply at start.")] = Path("deployments"),
    port: Annotated[int, typer.Option("--port", help="Port of the Prefect server and UI.")] = 4200,
) -> None:
    """Run SMS on this machine: Prefect server + UI, a worker, the sample scripts. Ctrl-C stops all."""
    from sms_plugin.stack import EmbeddedStack

    EmbeddedStack(port=port, catalog_path=catalog_path, console=out).run()


app.command("worker")(worker_command)
app.command("exporter")(_exporter)
app.command("events")(_events)
_logs.register(app)
access_cli.register(app)
app.command("gateway")(_gateway)
app.command("login")(_login)
app.command("logout")(_logout)


def _http_failure(error: Exception) -> int:
    """Exit status 1 after one line on an unreachable Prefect API or its error answer; any other
    error goes on up. httpx is imported here, not at start-up: only the verbs that talk HTTP load it."""
    import httpx

    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        from prefect.settings import PREFECT_API_URL

        from sms_plugin import tls

        refused = tls.refusal(f"the Prefect API at {PREFECT_API_URL.value()}", error, tls.prefect_api_trust())
        if refused is not None:
            err.print(f"error: {refused}", markup=False, highlight=False, soft_wrap=True)
            return 1
        err.print(
            f"error: cannot reach the Prefect API at {PREFECT_API_URL.value() or '(PREFECT_API_URL unset)'} ({error}); "
            f"start SMS with `sms up` or set PREFECT_API_URL",
            markup=False,
            highlight=False,
        )
        return 1
    if isinstance(error, httpx.HTTPStatusError):
        err.print(f"error: the Prefect API answered {error.response.status_code}: {error.response.text[:300]}", markup=False)
        return 1
    raise error


def main() -> None:
    """Entry point of the ``sms`` command."""
    # Prefect's events service warns while it sends the last events at exit ("EventsWorker - Still
    # processing items"): they are still sent; the warning is noise on a person's terminal.
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    try:
        code = app(standalone_mode=False)
    except typer.exceptions.TyperException as error:  # typer's click: usage errors, a missing argument...
        error.show()  # type: ignore[attr-defined] # every one typer raises is a click exception
        code = error.exit_code
    except typer.Abort:
        err.print("Aborted.")
        code = 130
    except (SelectorError, Unattended, RefusedSetting) as error:  # a usage error, like click's; unwrapped (the caret points right)
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        code = 2
    except SMSError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        code = 1
    except TimeoutError:
        err.print("error: gave up waiting; the run goes on (see `sms logs RUN_ID`, stop it with `sms stop RUN_ID`)")
        code = 1
    except BrokenPipeError:  # `sms logs RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        code = 141
    except OSError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        code = 1
    except Exception as error:  # noqa: BLE001 - httpx's errors are told apart in _http_failure, others re-raised
        code = _http_failure(error)
    # The verb is done: the garbage collector leaves the objects it made to the operating system, so
    # the interpreter's exit does not free them one by one (0.3 CPU-seconds of `sms script list`).
    # Exit handlers, flushing and the objects' own closing (refcounts, `with`) are unchanged.
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
