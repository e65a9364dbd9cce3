"""Declarative catalogs: ``deployments/*.yaml`` describe hosts and scripts; ``plan`` shows what
would change, ``apply`` does it. Applying twice changes nothing the second time.

A file looks like this (paths are relative to the file; secrets never live in it)::

    hosts:
      - name: web-01
        type: ssh                      # or: local, windows (the kinds of sms_plugin.host_kinds)
        address: 10.0.0.5
        username: ops
        private_key_file: ~/.ssh/sms_ed25519   # read when applying
        password_env: WEB01_PASSWORD           # an environment variable's name
        host_keys: ["ssh-ed25519 AAAA..."]     # omitted: keys pinned earlier are kept
      - name: win-01
        type: windows                  # WindowsHost fields: scheme, auth, ca_path, ...
        address: 10.0.0.7
        username: CORP\\svc-sms
        password_env: WIN01_PASSWORD
        labels: [prod-eu]              # every kind has labels
    scripts:
      - name: nightly-report
        interpreter: ksh
        host: web-01
        file: scripts/nightly_report.ksh
        schedules: [{cron: "0 2 * * *", timezone: Europe/Berlin}]

Scripts and hosts that exist but are not declared are left alone: applying a file never deletes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from sms_plugin import hosts as host_services
from sms_plugin.host_kinds import HostKind, build, load_host
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, ScriptSpec, get_script, get_version
from sms_plugin.errors import InvalidInput, NotFound

Action = Literal["add", "update", "unchanged"]


@dataclass(frozen=True)
class DeclaredScript:
    spec: ScriptSpec
    content: str | None


@dataclass
class Change:
    """One line of a plan, e.g. ``update script backup: timeout_seconds, new version``."""

    kind: Literal["host", "script", "group"]
    name: str
    action: Action
    detail: str = ""


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    hosts: dict[str, HostKind] = field(default_factory=dict)
    scripts: list[DeclaredScript] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [change for change in self.changes if change.action != "unchanged"]


def _read_file(base: Path, name: str) -> str:
    path = (base / Path(name).expanduser()).resolve()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None


def _host_block(entry: dict[str, Any], base: Path) -> HostKind:
    """A declared host: its kind's block fields, with ``private_key_file`` (read from a file next
    to the declaration) and ``password_env`` (an environment variable's name) for the secrets."""
    fields = dict(entry)
    kind = fields.pop("type", "ssh")
    fields.pop("name")
    if key_file := fields.pop("private_key_file", None):
        fields["private_key"] = _read_file(base, key_file)
    if password_env := fields.pop("password_env", None):
        if password_env not in os.environ:
            raise InvalidInput(f"host {entry['name']!r}: environment variable {password_env} is not set")
        fields["password"] = os.environ[password_env]
    try:
        return build(kind, fields)
    except InvalidInput as error:
        raise InvalidInput(f"host {entry['name']!r}: {error}") from None


def load(path: Path) -> tuple[dict[str, HostKind], list[DeclaredScript]]:
    """The hosts and scripts declared in a YAML file, or in every ``*.yaml`` of a folder."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files:
        raise InvalidInput(f"no *.yaml files in {path}")
    hosts: dict[str, HostKind] = {}
    scripts: list[DeclaredScript] = []
    for file in files:
        try:
            document = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            for entry in document.get("hosts", []):
                hosts[entry["name"]] = _host_block(entry, file.parent)
            for entry in document.get("scripts", []):
                fields = dict(entry)
                source = fields.pop("file", None)
                content = _read_file(file.parent, source) if source else None
                scripts.append(DeclaredScript(ScriptSpec.parse(fields), content))
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValidationError, InvalidInput) as error:
            raise InvalidInput(f"{file}: {error}") from None
    return hosts, scripts


def _settings(block: HostKind) -> dict[str, Any]:
    """The block's own fields (a loaded block also carries its Prefect document's id and name)."""
    return {name: getattr(block, name) for name in type(block).model_fields}


async def _host_change(name: str, declared: HostKind) -> Change:
    try:
        existing = await load_host(name)
    except NotFound:
        return Change("host", name, "add", declared.describe())
    declared.carry_over(existing)
    if type(existing) is type(declared) and _settings(existing) == _settings(declared):
        return Change("host", name, "unchanged")
    return Change("host", name, "update", declared.describe())


def _script_change(session: Session, declared: DeclaredScript) -> Change:
    name = declared.spec.name
    try:
        existing = get_script(session, name)
    except NotFound:
        return Change("script", name, "add", f"{declared.spec.interpreter} on {declared.spec.host}")
    changed = [
        key
        for key, value in declared.spec.model_dump().items()
        if ScriptSpec.from_script(existing).model_dump()[key] != value
    ]
    if declared.content is not None and existing.interpreter != "original":
        newest = get_version(session, name)
        if newest.content != declared.content:
            changed.append(f"new version (after {newest.number})")
    return Change("script", name, "update" if changed else "unchanged", ", ".join(changed))


async def plan(catalog: Catalog, path: Path) -> Plan:
    """What applying ``path`` would change; nothing is changed."""
    hosts, scripts = load(path)
    result = Plan(hosts=hosts, scripts=scripts)
    for name, block in hosts.items():
        result.changes.append(await _host_change(name, block))
    for declared in scripts:
        result.changes.append(await catalog.aio.run(_script_change, declared))
    return result


async def apply(catalog: Catalog, planned: Plan, *, author: str) -> None:
    """Carries out a plan made by :func:`plan`."""
    actions = {(change.kind, change.name): change.action for change in planned.changes}
    changed = {name: block for name, block in planned.hosts.items() if actions[("host", name)] != "unchanged"}
    if refused := await host_services.add_many(changed, overwrite=True):
        raise host_services.refusals(refused)
    for declared in planned.scripts:
        action = actions[("script", declared.spec.name)]
        if action == "add":
            await script_services.add(catalog, declared.spec, declared.content, author=author, comment="sms apply")
        elif action == "update":
            await script_services.update(
                catalog, declared.spec, declared.content, author=author, comment="sms apply"
            )
