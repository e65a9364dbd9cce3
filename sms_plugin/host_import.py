"""``sms host import``: create or update SSH hosts (and host groups) from an inventory file.

``plan`` reads the inventory and says, host by host, what importing would do; ``apply`` does it.
An existing host keeps what the inventory does not say: its pinned host keys, its credentials
(unless the entry names a key file or another host's credentials), its shell and limits.
Any problem in the file refuses the whole import before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pydantic import SecretStr

from prefect import get_client

from sms_plugin.host_kinds import SSHHost, StoredHost, build, stored_hosts
from sms_plugin import apply as declarative
from sms_plugin import host_groups
from sms_plugin.apply import Action, Change, Plan
from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog
from sms_plugin.errors import InvalidInput
from sms_plugin.inventory import Inventory, InventoryGroup, InventoryHost
from sms_plugin.limits import PREFECT_ERRORS
from sms_plugin.selectors import SelectorError

@dataclass
class ImportPlan(Plan):
    """What an import would do: ``changes`` for hosts and groups (``scripts`` stays empty)."""

    groups: list[InventoryGroup] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _existing(name: str, stored: dict[str, StoredHost]) -> SSHHost | None:
    if name not in stored:
        return None
    host = stored[name].block
    if not isinstance(host, SSHHost):
        raise InvalidInput(f"host {name!r} exists and is a {host.kind} host: an import only creates and updates SSH hosts")
    return host


def _credentials(
    entry: InventoryHost, existing: SSHHost | None, shared_from: str | None, stored: dict[str, StoredHost]
) -> dict[str, SecretStr | None]:
    """The key and password of the new block: the key file's, another host's, or the existing host's own."""
    if entry.key_file is not None:
        try:
            return {"private_key": SecretStr(entry.key_file.read_text(encoding="utf-8"))}
        except OSError as error:
            raise InvalidInput(f"cannot read the key file {entry.key_file}: {error.strerror}") from None
    source_name = entry.credentials_from or shared_from
    source = _existing(source_name, stored) if source_name else existing
    if source_name and source is None:
        raise InvalidInput(f"credentials_from names host {source_name!r}, which does not exist")
    if source is None:
        raise InvalidInput("no credentials: give a key file, credentials_from (an existing host) or --credentials-from")
    return {
        "private_key": source.private_key,
        "private_key_passphrase": source.private_key_passphrase,
        "password": source.password,
    }


def _block(
    entry: InventoryHost, existing: SSHHost | None, stored: dict[str, StoredHost], *, user: str | None, shared_from: str | None
) -> SSHHost:
    host_services.checked_name(entry.name)
    username = entry.username or user or (existing.username if existing else None)
    if not username:
        raise InvalidInput("no user name: set ansible_user / username, or give --user")
    fields = {
        "address": entry.address,
        "port": entry.port,
        "username": username,
        "labels": host_services.checked_labels(list(entry.labels)),
        "legacy": entry.legacy,
        **_credentials(entry, existing, shared_from, stored),
    }
    if entry.host_keys:
        fields["host_keys"] = list(entry.host_keys)
    block = build("ssh", {**(existing.model_dump() if existing else {}), **fields})  # validated: InvalidInput
    assert isinstance(block, SSHHost)
    return block


async def plan(
    catalog: Catalog, inventory: Inventory, *, user: str | None = None, credentials_from: str | None = None
) -> ImportPlan:
    """What importing ``inventory`` would change; nothing is changed. InvalidInput lists every problem.
    The stored hosts are read once (one request per kind), not host by host."""
    result = ImportPlan(groups=list(inventory.groups), skipped=list(inventory.skipped))
    problems: list[str] = []
    with PREFECT_ERRORS.boundary("reading the stored hosts"):
        async with get_client() as client:
            stored = await stored_hosts(client, include_secrets=True)
    for entry in inventory.hosts:
        if entry.name in result.hosts:
            problems.append(f"{entry.source}: the host name {entry.name!r} is given twice")
            continue
        try:
            existing = _existing(entry.name, stored)
            block = _block(entry, existing, stored, user=user, shared_from=credentials_from)
        except InvalidInput as error:
            problems.append(f"{entry.source}: {error}")
            continue
        result.hosts[entry.name] = block
        result.notes.extend(f"{entry.name}: {note}" for note in entry.notes)
        if existing is None:
            result.changes.append(Change("host", entry.name, "add", f"{block.describe()}, labels {' '.join(block.labels) or '-'}"))
            continue
        old, new = existing.model_dump(), block.model_dump()
        changed = [name for name in SSHHost.model_fields if old.get(name) != new.get(name)]
        result.changes.append(Change("host", entry.name, "update" if changed else "unchanged", ", ".join(changed)))
    stored = await catalog.aio.run(host_groups.stored_selectors)
    known = dict(stored)  # the stored groups, then the file's in file order (as apply adds them)
    for group in inventory.groups:
        try:
            host_groups.checked_selector(group.name, group.selector, known)
        except (SelectorError, InvalidInput) as error:
            problems.append(f"group {group.name}: {error}")
        known[group.name] = group.selector
        action: Action = "add" if group.name not in stored else "unchanged" if stored[group.name] == group.selector else "update"
        result.changes.append(Change("group", group.name, action, group.selector))
    if problems:
        raise InvalidInput("the inventory cannot be imported; nothing was changed:\n  " + "\n  ".join(problems))
    return result


async def apply(catalog: Catalog, planned: ImportPlan, *, author: str) -> None:
    """Carries out a plan made by :func:`plan`: hosts first (as ``sms apply`` does), then host groups in file order."""
    await declarative.apply(catalog, planned, author=author)
    actions = {(change.kind, change.name): change.action for change in planned.changes}
    for group in planned.groups:
        action = actions[("group", group.name)]
        if action == "add":
            await catalog.aio.run(host_groups.add, group.name, group.selector, group.description, author=author)
        elif action == "update":
            await catalog.aio.run(host_groups.replace, group.name, group.selector, group.description, author=author)
