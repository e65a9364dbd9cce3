"""Inventory files for `sms host import`: Ansible's INI and YAML read exactly as ansible-core's own
`ansible-inventory --list` reads them (the peer, installed with the test extra), and SMS's format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sms_plugin.errors import InvalidInput
from sms_plugin.inventory import InventoryHost, read, sms_name
from sms_plugin.inventory import ansible

EXAMPLES = Path(__file__).parents[2] / "deployments" / "inventory"

NESTED_INI = """
[all:vars]
ansible_user=everyone
ansible_port=1

[top:children]
middle
[top:vars]
ansible_port=2
ansible_user=top
[middle:children]
leaf
[middle:vars]
ansible_port=3
[leaf]
h[a:e:2] ansible_host="10.0.0.9"
n[8:11]
[leaf:vars]
ansible_port=4
[zeta]
n9 ansible_port=5
[alpha]
n9
[alpha:vars]
ansible_user=alpha
[zeta:vars]
ansible_user=zeta
"""

NESTED_YAML = """
all:
  vars: {ansible_user: everyone}
  children:
    outer:
      vars: {ansible_port: 10, flag: "outer"}
      children:
        inner:
          vars: {ansible_port: 20}
          hosts:
            box[001:003]: {ansible_host: 192.0.2.1}
        other:
          hosts:
            box002: {flag: "host"}
    second:
      children:
        inner:
"""


def ansible_inventory(path: Path) -> dict:
    tool = shutil.which("ansible-inventory", path=str(Path(sys.executable).parent))
    assert tool, "ansible-inventory is missing: install the test extra (pip install -e '.[test]'), it brings ansible-core"
    listed = subprocess.run([tool, "-i", str(path), "--list"], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(listed.stdout)


def ansible_groups(listing: dict, host: str) -> set[str]:
    """Every group ``host`` is in according to ansible-inventory, through children too."""
    def members(group: str) -> set[str]:
        body = listing.get(group, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            found |= members(child)
        return found

    return {group for group in listing if group not in ("_meta", "all", "ungrouped") and host in members(group)}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("examples.ini", (EXAMPLES / "ansible-hosts.ini").read_text()),
        ("examples.yaml", (EXAMPLES / "ansible-hosts.yaml").read_text()),
        ("nested.ini", NESTED_INI),
        ("nested.yaml", NESTED_YAML),
    ],
)
def test_hosts_groups_and_variables_match_ansible_inventory(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    listing = ansible_inventory(path)
    ours = {host.name: host for host in ansible.read(text, yaml_format=name.endswith(".yaml"))}
    assert sorted(ours) == sorted(listing["_meta"]["hostvars"])
    for host_name, host in ours.items():
        assert host.vars == listing["_meta"]["hostvars"][host_name], host_name
        assert host.groups == ansible_groups(listing, host_name), host_name


def test_ansible_entries_become_sms_hosts_without_secrets() -> None:
    inventory = read(EXAMPLES / "ansible-hosts.ini")
    hosts = {host.source: host for host in inventory.hosts}
    assert hosts["web-legacy.example.com"] == InventoryHost(
        name="web-legacy-example-com", address="10.0.0.99", port=2222, username="ops", labels=("eu", "web"),
        source="web-legacy.example.com",
    )
    db = hosts["db1.example.com"]
    assert db.key_file == EXAMPLES / "keys" / "db_ed25519"
    assert db.notes == ("ansible_password ignored: secrets are not taken from inventories",)
    assert "not-taken" not in repr(db)
    assert inventory.skipped == [("win1.example.com", "ansible_connection=winrm: SMS imports SSH hosts only")]
    from_yaml = {host.source: host for host in read(EXAMPLES / "ansible-hosts.yaml").hosts}
    assert from_yaml["db1.example.com"].credentials_from == "db-template"
    assert from_yaml["web01.example.com"].port == 22022  # the inner group's vars win over the outer's


def test_the_sms_format_merges_defaults_and_keeps_groups() -> None:
    inventory = read(EXAMPLES / "sms-hosts.yaml")
    first, *_, last = inventory.hosts
    assert first == InventoryHost(
        name="web-01", address="10.0.0.11", username="ops", labels=("site=eu", "role=web", "prod-eu"),
        credentials_from="web-template", source="web-01",
    )
    assert last.labels == ("site=eu", "role=web", "site=us")
    assert inventory.hosts[2].key_file == EXAMPLES / "keys" / "db_ed25519"
    assert inventory.hosts[2].legacy
    assert [(g.name, g.selector) for g in inventory.groups] == [
        ("web-eu", "role=web AND site=eu"), ("patchable", "@web-eu OR role=db AND NOT legacy"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hosts:\n  - name: a\n    password: hunter2\n", "a: password refused: an inventory holds no secrets"),
        ("defaults:\n  private_key: xyz\nhosts: []\n", "defaults: private_key refused"),
        ("hosts:\n  - name: a\n    colour: red\n", "Extra inputs are not permitted"),
    ],
)
def test_the_sms_format_refuses_secrets_and_unknown_fields(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=problem) as raised:
        read(path)
    assert "hunter2" not in str(raised.value)


def test_broken_ansible_inventories_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="group 'a' is its own child: all -> a -> b -> a"):
        ansible.read("[a:children]\nb\n[b:children]\na\n", yaml_format=False)
    with pytest.raises(InvalidInput, match=r"host range '\[1:b\]'"):
        ansible.read("web[1:b]\n", yaml_format=False)
    with pytest.raises(InvalidInput, match="line 1: expected KEY=VALUE"):
        ansible.read("web1 ansible_port\n", yaml_format=False)


def test_sms_names_from_inventory_names() -> None:
    assert sms_name("Web01.Example.com") == "web01-example-com"
    assert sms_name("10.0.0.1") == "10-0-0-1"
    assert sms_name("db_01") == "db-01"  # Prefect block names take no '_'



def test_a_port_that_is_no_number_is_refused_naming_the_host(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("web1 ansible_port=ssh\n")
    with pytest.raises(InvalidInput, match="web1: ansible_port must be a number, not 'ssh'"):
        read(path)
