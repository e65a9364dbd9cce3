"""Host inventories for ``sms host import``: SMS's own YAML format and Ansible's INI and YAML formats,
read into one neutral list of SSH host entries (and, from SMS's format, host groups). Pure: the
file's text in, entries out; nothing is created here (``sms_plugin.host_import`` does that).

Secrets never come from an inventory: a host names a private key *file* (read when importing) or an
existing host whose credentials it shares; Ansible's password variables are ignored (docs/fleet.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sms_plugin.errors import InvalidInput
from sms_plugin.inventory import ansible

Format = Literal["sms", "ansible-ini", "ansible-yaml"]
FORMATS: tuple[Format, ...] = ("sms", "ansible-ini", "ansible-yaml")
#: Ansible variables holding passwords: never taken (an inventory is no place for secrets).
ANSIBLE_SECRETS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password",
                   "ansible_become_pass", "ansible_sudo_pass")
_SSH_CONNECTIONS = ("ssh", "paramiko", "smart")


@dataclass(frozen=True)
class InventoryHost:
    """One SSH host to create or update; ``source`` is its name in the inventory file."""

    name: str
    address: str
    port: int = 22
    username: str | None = None
    labels: tuple[str, ...] = ()
    key_file: Path | None = None
    credentials_from: str | None = None
    host_keys: tuple[str, ...] = ()
    legacy: bool = False
    source: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InventoryGroup:
    name: str
    selector: str
    description: str = ""


@dataclass
class Inventory:
    hosts: list[InventoryHost] = field(default_factory=list)
    groups: list[InventoryGroup] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Inventory entries not imported, with the reason (e.g. a WinRM host)."""


class _SMSHostFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=100)
    labels: list[str] = []
    private_key_file: str | None = None
    credentials_from: str | None = None
    host_keys: list[str] = []
    legacy: bool | None = None


class _SMSHost(_SMSHostFields):
    name: str


class _SMSGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    selector: str
    description: str = ""


class _SMSInventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: _SMSHostFields = _SMSHostFields()
    hosts: list[_SMSHost] = []
    groups: list[_SMSGroup] = []


_SECRET_FIELDS = ("password", "private_key", "private_key_passphrase", "password_env")


def _sms(document: Any, base: Path) -> Inventory:
    for entry in [document.get("defaults") or {}, *(document.get("hosts") or [])]:
        given = [key for key in _SECRET_FIELDS if isinstance(entry, dict) and key in entry]
        if given:
            raise InvalidInput(
                f"{entry.get('name', 'defaults')}: {', '.join(given)} refused: an inventory holds no secrets; "
                "give private_key_file (a path) or credentials_from (an existing host)"
            )
    try:
        parsed = _SMSInventory.model_validate(document)
    except ValidationError as error:
        raise InvalidInput(str(error)) from None
    defaults = parsed.defaults
    inventory = Inventory(groups=[InventoryGroup(g.name, g.selector, g.description) for g in parsed.groups])
    for host in parsed.hosts:
        key_file = host.private_key_file or defaults.private_key_file
        inventory.hosts.append(InventoryHost(
            name=host.name,
            address=host.address or defaults.address or host.name,
            port=host.port or defaults.port or 22,
            username=host.username or defaults.username,
            labels=tuple(dict.fromkeys([*defaults.labels, *host.labels])),
            key_file=(base / Path(key_file).expanduser()) if key_file else None,
            credentials_from=host.credentials_from or defaults.credentials_from,
            host_keys=tuple(host.host_keys or defaults.host_keys),
            legacy=bool(host.legacy if host.legacy is not None else defaults.legacy),
            source=host.name,
        ))
    return inventory


def sms_name(inventory_name: str) -> str:
    """An SMS host name for an inventory host name: lower case, other characters as '-' (``Web_01.eu`` → ``web-01-eu``)."""
    return re.sub(r"[^a-z0-9-]", "-", inventory_name.lower())


def _from_ansible(hosts: list[ansible.AnsibleHost], base: Path) -> Inventory:
    inventory = Inventory()
    for host in hosts:
        values = host.vars
        connection = str(values.get("ansible_connection", "ssh"))
        if connection not in _SSH_CONNECTIONS:
            inventory.skipped.append((host.name, f"ansible_connection={connection}: SMS imports SSH hosts only"))
            continue
        key_file = values.get("ansible_ssh_private_key_file") or values.get("ansible_private_key_file")
        ignored = [name for name in ANSIBLE_SECRETS if name in values]
        inventory.hosts.append(InventoryHost(
            name=str(values.get("sms_name") or sms_name(host.name)),
            address=str(values.get("ansible_host") or values.get("ansible_ssh_host") or host.name),
            port=_port(host.name, values.get("ansible_port") or values.get("ansible_ssh_port") or 22),
            username=_text(values.get("ansible_user") or values.get("ansible_ssh_user")),
            labels=tuple(sorted(host.groups)),
            key_file=(base / Path(str(key_file)).expanduser()) if key_file else None,
            credentials_from=_text(values.get("sms_credentials_from")),
            source=host.name,
            notes=(f"{', '.join(ignored)} ignored: secrets are not taken from inventories",) if ignored else (),
        ))
    return inventory


def _port(host: str, value: Any) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        return int(value)
    raise InvalidInput(f"{host}: ansible_port must be a number, not {value!r}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def detect(path: Path, text: str) -> Format:
    """The format of an inventory file: SMS's (a YAML ``hosts:`` list), Ansible YAML or Ansible INI."""
    if path.suffix in (".yaml", ".yml"):
        try:
            document = yaml.load(text, Loader=ansible.Loader)
        except yaml.YAMLError as error:
            raise InvalidInput(f"{path}: not valid YAML: {error}") from None
        return "sms" if isinstance(document, dict) and isinstance(document.get("hosts"), list) else "ansible-yaml"
    return "ansible-ini"


def read(path: Path, format: Format | None = None) -> Inventory:
    """The hosts (and groups) of the inventory file ``path``; ``format`` is detected when not given."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None
    format = format or detect(path, text)
    try:
        if format == "sms":
            document = yaml.safe_load(text) or {}
            if not isinstance(document, dict):
                raise InvalidInput("an SMS inventory is a mapping with defaults, hosts and groups")
            return _sms(document, path.parent)
        return _from_ansible(ansible.read(text, yaml_format=format == "ansible-yaml"), path.parent)
    except (InvalidInput, yaml.YAMLError) as error:
        raise InvalidInput(f"{path} ({format}): {error}") from None
