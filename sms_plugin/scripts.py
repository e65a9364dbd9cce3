"""Script services: every change goes to the catalog and then to the script's Prefect deployment.

The catalog is the source of truth for what a script is; Prefect for when and how it runs.
``sync`` repairs any drift between the two (a deployment deleted in the UI, a failed update).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sms_plugin.catalog import (
    Catalog,
    Script,
    ScriptSpec,
    ScriptVersion,
    add_script,
    add_version,
    get_script,
    get_version,
    list_scripts,
    list_versions,
    remove_script,
    update_script,
)
from sms_plugin.errors import NotFound, RefusedSetting
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sms_plugin import deploy, host_kinds, schedules
    from sms_plugin.transports import interpreters
else:  # Prefect, the flow and the checks of a change: loaded by the first change, not by reads of the catalog
    deploy = lazy_module("sms_plugin.deploy")
    host_kinds = lazy_module("sms_plugin.host_kinds")
    schedules = lazy_module("sms_plugin.schedules")
    interpreters = lazy_module("sms_plugin.transports.interpreters")

#: The settings :func:`revised` changes as given; ``schedule`` (a cron or None) and ``timezone`` are its own.
SETTINGS = ("host", "timeout_seconds", "retries", "retry_delay_seconds", "single_instance", "description", "tags")


@dataclass(frozen=True)
class ScriptChange:
    """What an update did: the metadata fields changed and the new version, if one was made."""

    script: Script
    changed_fields: dict[str, tuple[object, object]]
    new_version: ScriptVersion | None


async def add(catalog: Catalog, spec: ScriptSpec, content: str | None, *, author: str, comment: str = "") -> Script:
    """Adds a script (version 1 holds ``content``) and creates its deployment."""
    interpreters.interpreter(spec.interpreter)
    script = await catalog.aio.run(add_script, spec, content=content, author=author, comment=comment)
    await deploy.sync_script(script)
    return script


async def update(
    catalog: Catalog, spec: ScriptSpec, content: str | None = None, *, author: str, comment: str = ""
) -> ScriptChange:
    """Replaces a script's metadata with ``spec``; ``content`` makes a new version if it differs."""
    interpreters.interpreter(spec.interpreter)

    def change(session: Session) -> ScriptChange:
        script, changed = update_script(session, spec.name, spec, author=author)
        version, created = (None, False)
        if content is not None:
            version, created = add_version(session, spec.name, content, author=author, comment=comment)
        return ScriptChange(script, changed, version if created else None)

    made = await catalog.aio.run(change)
    await deploy.sync_script(made.script)
    return made


async def revised(script: Script, changes: Mapping[str, Any]) -> ScriptSpec:
    """``script``'s spec with ``changes`` (keys of :data:`SETTINGS`, ``targets``, ``schedule`` and
    ``timezone``; ``host`` and ``targets`` each replace the other),
    checked as a person should hear at once: RefusedSetting for an unknown host, an unknown time zone,
    a cron that is malformed, never fires or fires more often than ``SMS_SCHEDULE_MIN_SECONDS``.

    ``schedule`` replaces every schedule with that one cron (None: no schedule); ``timezone`` alone
    moves the existing schedules to that zone. Nothing is saved: give the result to :func:`update`."""
    current = ScriptSpec.from_script(script)
    values = current.model_dump()
    values.update({field: changes[field] for field in SETTINGS if field in changes})
    if "host" in changes:  # one host instead of a selector
        values["targets"] = None
    if "targets" in changes:  # a selector instead of one host
        values["targets"], values["host"] = changes["targets"], None
    if "timezone" in changes:
        schedules.zone(changes["timezone"])
    if "schedule" in changes:
        timezone = changes.get("timezone") or next((s.timezone for s in current.schedules), "UTC")
        values["schedules"] = [schedules.checked(changes["schedule"], timezone)] if changes["schedule"] else []
    elif "timezone" in changes:
        values["schedules"] = [_rezoned(entry.model_dump(exclude_none=True), changes["timezone"]) for entry in current.schedules]
    if values["host"] is not None and values["host"] != current.host:
        try:
            await host_kinds.load_host(values["host"])
        except NotFound:
            raise RefusedSetting(f"no host named {values['host']!r}: add it first (`sms host add`, or POST /api/v1/hosts)") from None
    return ScriptSpec.parse(values)


def _rezoned(entry: dict[str, Any], timezone: str) -> dict[str, Any]:
    if entry.get("cron"):
        return schedules.checked(entry["cron"], timezone)
    return {**entry, "timezone": timezone}


async def remove(catalog: Catalog, name: str, *, author: str) -> None:
    """Removes a script and its deployment; its run records and audit trail stay."""
    await catalog.aio.run(get_script, name)
    await deploy.remove_deployment(name)
    await catalog.aio.run(remove_script, name, author=author)


def show(catalog: Catalog, name: str) -> Script:
    with catalog.session() as session:
        return get_script(session, name)


def listing(catalog: Catalog, tag: str | None = None) -> list[Script]:
    with catalog.session() as session:
        return list_scripts(session, tag=tag)


def versions(catalog: Catalog, name: str) -> list[ScriptVersion]:
    with catalog.session() as session:
        return list_versions(session, name)


def version(catalog: Catalog, name: str, number: int | None = None) -> ScriptVersion:
    with catalog.session() as session:
        return get_version(session, name, number)


@dataclass(frozen=True)
class SyncReport:
    deployed: list[str]
    removed: list[str]


async def sync(catalog: Catalog) -> SyncReport:
    """Makes the deployments in SMS's work pool match the catalog: one per script, none for removed
    scripts, plus the housekeeping deployment (which also checks the pool, once for all)."""
    await deploy.sync_housekeeping()
    scripts = await catalog.aio.run(list_scripts)
    for script in scripts:
        await deploy.apply_script(script)
    deployed = await deploy.deployed_scripts()
    orphans = sorted(deployed.keys() - {s.name for s in scripts})
    await deploy.delete_deployments(deployed[name] for name in orphans)
    return SyncReport(deployed=[s.name for s in scripts], removed=orphans)
