"""`sms host import`, `sms host list --select` and `sms host group` through the real `sms` command and
a real Prefect server: what a dry run shows and leaves alone, what an import creates and keeps, and
that secrets never come from the inventory file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.hosts import SSHHost, load_host
from sms_plugin import hosts as host_services
from sms_plugin.errors import NotFound

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
SUFFIX = uuid.uuid4().hex[:6]
TEMPLATE = f"imp-template-{SUFFIX}"
WEB, DB = f"imp-web-{SUFFIX}", f"imp-db-{SUFFIX}"
TEMPLATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntemplate\n-----END OPENSSH PRIVATE KEY-----\n"


def sms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMS, *args], capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "250"})


async def names() -> set[str]:
    return {host.name for host in await host_services.listing()}


@pytest.fixture(scope="module")
async def template(prefect_server) -> str:
    await host_services.add(TEMPLATE, SSHHost(address="192.0.2.1", username="ops", private_key=SecretStr(TEMPLATE_KEY),
                                              password=SecretStr("template-password")))
    return TEMPLATE


def inventory(tmp_path: Path, web_address: str = "192.0.2.11", extra: str = "") -> Path:
    (tmp_path / "db_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ndb\n-----END OPENSSH PRIVATE KEY-----\n")
    path = tmp_path / "hosts.yaml"
    path.write_text(f"""
defaults: {{username: ops, credentials_from: {TEMPLATE}, labels: [site=eu]}}
hosts:
  - {{name: {WEB}, address: {web_address}, labels: [role=web]}}
  - {{name: {DB}, address: 192.0.2.21, labels: [role=db, legacy], private_key_file: db_key, port: 2222}}
{extra}
groups:
  - {{name: imp-eu-{SUFFIX}, selector: "site=eu AND imp-*-{SUFFIX}", description: imported}}
""")
    return path


async def test_dry_run_then_import_then_update_keeps_pinned_keys(template, tmp_path):
    path = inventory(tmp_path)
    dry = sms("host", "import", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"add       host {WEB} (ops@192.0.2.11:22, labels site=eu role=web)" in dry.stdout
    assert f"add       group imp-eu-{SUFFIX}" in dry.stdout
    assert not {WEB, DB} & await names()  # a dry run creates nothing
    assert sms("host", "group", "show", f"imp-eu-{SUFFIX}").returncode == 1

    done = sms("host", "import", str(path), "--yes")
    assert done.returncode == 0, done.stderr
    assert f"New SSH hosts must be trusted before use: sms host trust NAME ({WEB}, {DB})" in done.stdout
    web, db = await load_host(WEB), await load_host(DB)
    assert isinstance(web, SSHHost) and isinstance(db, SSHHost)
    assert (web.address, web.username, web.labels) == ("192.0.2.11", "ops", ["site=eu", "role=web"])
    assert web.private_key.get_secret_value() == TEMPLATE_KEY  # shared from the template host
    assert web.password.get_secret_value() == "template-password"
    assert (db.port, db.private_key.get_secret_value().splitlines()[1], db.password) == (2222, "db", None)

    await host_services.pin_host_key(WEB, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedKeyPinnedKeyPinnedKeyPinnedKey00")
    again = sms("host", "import", str(inventory(tmp_path, web_address="192.0.2.99")), "--yes")
    assert again.returncode == 0, again.stderr
    assert f"update    host {WEB} (address)" in again.stdout and f"unchanged host {DB}" in again.stdout
    web = await load_host(WEB)
    assert web.address == "192.0.2.99" and len(web.host_keys) == 1  # the pinned key stays

    picked = sms("host", "list", "--select", f"role=web AND @imp-eu-{SUFFIX}")
    assert picked.returncode == 0 and WEB in picked.stdout and DB not in picked.stdout
    assert "No host matches the selector" in sms("host", "list", "--select", f"role=web AND NOT site=eu AND {WEB}").stdout
    bad = sms("host", "list", "--select", "role=web AND (legacy")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: selector error at column 21: expected ')', found the end", "  role=web AND (legacy", " " * 22 + "^",
    ]


async def test_clear_text_secrets_refuse_the_whole_import(template, tmp_path):
    fresh = f"imp-new-{SUFFIX}"
    path = inventory(tmp_path, extra=f"  - {{name: {fresh}, address: 192.0.2.30, password: hunter2}}")
    refused = sms("host", "import", str(path), "--yes")
    assert refused.returncode == 1
    assert f"{fresh}: password refused: an inventory holds no secrets" in refused.stderr
    assert "hunter2" not in refused.stderr + refused.stdout
    with pytest.raises(NotFound):
        await load_host(fresh)


async def test_ansible_inventory_groups_become_labels(template, tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text(f"[web]\nansible{SUFFIX}-[1:2].example.com ansible_password=never\n[eu:children]\nweb\n"
                    f"[nocreds]\nbare{SUFFIX}.example.com\n")
    refused = sms("host", "import", str(path), "--user", "deploy", "--yes")
    assert refused.returncode == 1
    assert f"bare{SUFFIX}.example.com: no credentials: give a key file" in refused.stderr
    assert not {f"ansible{SUFFIX}-1-example-com"} & await names()  # nothing was created

    path.write_text(path.read_text().replace(f"bare{SUFFIX}.example.com", ""))
    done = sms("host", "import", str(path), "--user", "deploy", "--credentials-from", TEMPLATE, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"note: ansible{SUFFIX}-1-example-com: ansible_password ignored" in done.stdout
    host = await load_host(f"ansible{SUFFIX}-2-example-com")
    assert (host.address, host.username, host.labels) == (f"ansible{SUFFIX}-2.example.com", "deploy", ["eu", "web"])
    assert host.password.get_secret_value() == "template-password"  # the template's, never the file's


async def test_host_group_commands(prefect_server):
    group = f"imp-cli-{SUFFIX}"
    assert sms("host", "group", "add", group, "role=web OR legacy", "-d", "web or old").returncode == 0
    listed = sms("host", "group", "list")
    assert group in listed.stdout and "role=web OR legacy" in listed.stdout
    assert sms("host", "group", "add", group, "x").returncode == 1  # exists
    cycle = sms("host", "group", "add", group, f"@{group}", "--replace")
    assert cycle.returncode == 2 and "would refer to itself" in cycle.stderr
    assert sms("host", "group", "remove", group, "--yes").returncode == 0
    assert group not in sms("host", "group", "list").stdout
