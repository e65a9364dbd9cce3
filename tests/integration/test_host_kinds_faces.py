"""Hosts of every kind (ssh, local, windows), each added through a different face, then listed
through every face: the `sms` CLI, the SDK, the REST API behind the real gateway (real Keycloak
tokens) and the exporter's host probes. Labels show everywhere; secrets nowhere.

Real peers: the test bed's sshd, its WinRM host, Keycloak and a Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client

from sms_plugin import AsyncSMSClient
from sms_plugin import hosts as host_services
from sms_plugin.host_kinds import KINDS as REGISTRY
from sms_plugin.telemetry.exporter import Exporter, ExporterSettings
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

# The first test also starts Keycloak, the WinRM host (Wine), sshd and Prefect, and runs `sms`
# three times (~25 s each on a busy 2-core machine): more than the suite's default 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SMS = str(Path(sys.executable).with_name("sms"))
SUFFIX = uuid.uuid4().hex[:6]
SSH, LOCAL, WINDOWS, DECLARED = (f"hk-{kind}-{SUFFIX}" for kind in ("ssh", "local", "win", "decl"))
LABELS = {SSH: ["kind-ssh", "prod-eu"], LOCAL: ["kind-local"], WINDOWS: ["kind-windows", "prod-eu"],
          DECLARED: ["kind-windows", "declared"]}
KINDS = {SSH: "ssh", LOCAL: "local", WINDOWS: "windows", DECLARED: "windows"}


def sms(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `sms` command against the local catalog and this session's Prefect server."""
    return subprocess.run([SMS, "--local", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "300", **(env or {})})


@pytest.fixture(scope="module")
async def secrets_and_hosts(gateway: Gateway, ssh_server: Any, winrm_host: Any, tmp_path_factory) -> list[str]:  # noqa: F811
    """Adds the four hosts (each through another face) and returns the secrets they were given."""
    folder = tmp_path_factory.mktemp("host-kinds")
    key_file = folder / "id_ed25519"
    key_file.write_text(ssh_server.private_key_pem)
    key_file.chmod(0o600)

    # ssh through the CLI, its key then pinned through the SDK
    added = sms("host", "add", SSH, "--ssh", ssh_server.host, "--port", str(ssh_server.port), "--user",
                ssh_server.username, "--key-file", str(key_file), *(f"--label={label}" for label in LABELS[SSH]))
    assert added.returncode == 0, added.stderr
    sdk = AsyncSMSClient(user="tester")
    await sdk.trust_host(SSH, await sdk.scan_host_key(SSH))

    # local through the SDK
    await sdk.add_host(LOCAL, "local", labels=LABELS[LOCAL], admins_only=False)

    # windows through the REST API, as the admin
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        created = await client.post("/api/v1/hosts", headers=gateway.headers("adam"), json={
            "name": WINDOWS, "kind": "windows", "address": "127.0.0.1", "port": winrm_host.port,
            "username": winrm_host.username, "password": winrm_host.password, "auth": "ntlm",
            "operation_timeout": 5, "labels": LABELS[WINDOWS],
        })
    assert created.status_code == 201, created.text
    assert created.json()["settings"]["username"] == winrm_host.username
    assert winrm_host.password not in created.text and "password" not in created.json()["settings"]

    # windows through `sms apply`, the password from the environment
    declaration = folder / "hosts.yaml"
    declaration.write_text(json.dumps({"hosts": [{
        "name": DECLARED, "type": "windows", "address": "127.0.0.1", "port": winrm_host.port,
        "username": winrm_host.username, "password_env": "HK_WIN_PASSWORD", "auth": "ntlm",
        "operation_timeout": 5, "labels": LABELS[DECLARED],
    }]}))
    applied = sms("apply", str(declaration), "--yes", env={"HK_WIN_PASSWORD": winrm_host.password})
    assert applied.returncode == 0, applied.stderr + applied.stdout
    return [ssh_server.private_key_pem.strip().splitlines()[1], winrm_host.password]


def _assert_listed(hosts: dict[str, tuple[str, list[str]]]) -> None:
    """Every host of the test is there with its kind and labels."""
    assert {name: hosts.get(name) for name in KINDS} == {name: (KINDS[name], LABELS[name]) for name in KINDS}


async def test_the_cli_lists_every_kind_with_labels(secrets_and_hosts):
    listed = sms("host", "list")
    assert listed.returncode == 0, listed.stderr
    for name, kind in KINDS.items():
        [row] = [line for line in listed.stdout.splitlines() if f" {name} " in line]
        assert f" {kind} " in row and " ".join(LABELS[name]) in row, row
    assert not any(secret in listed.stdout for secret in secrets_and_hosts)


async def test_the_sdk_lists_every_kind_with_labels(secrets_and_hosts):
    infos = await AsyncSMSClient(user="tester").hosts()
    _assert_listed({info.name: (info.kind, list(info.labels)) for info in infos})
    by_name = {info.name: info for info in infos}
    assert by_name[SSH].pinned_keys == 1 and not by_name[LOCAL].admins_only
    assert not any(secret in repr(infos) for secret in secrets_and_hosts)


async def test_rest_lists_every_kind_with_labels_to_a_reader(gateway: Gateway, secrets_and_hosts):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        listed = await client.get("/api/v1/hosts", headers=gateway.headers("viola"))
        shown = await client.get(f"/api/v1/hosts/{WINDOWS}", headers=gateway.headers("viola"))
    assert listed.status_code == 200, listed.text
    _assert_listed({host["name"]: (host["kind"], host["labels"]) for host in listed.json()})
    assert shown.status_code == 200 and shown.json()["labels"] == LABELS[WINDOWS]
    assert not any(secret in listed.text + shown.text for secret in secrets_and_hosts)


async def test_rest_refuses_worker_side_fields_and_bad_windows_auth_and_saves_nothing(gateway: Gateway):  # noqa: F811
    refused = {
        f"hk-root-{SUFFIX}": {"kind": "local", "run_as": "root", "allow_root": True},
        f"hk-basic-{SUFFIX}": {"kind": "windows", "address": "127.0.0.1", "username": "u", "password": "p",
                               "auth": "basic"},
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        for name, body in refused.items():
            answer = await client.post("/api/v1/hosts", headers=gateway.headers("adam"), json={"name": name, **body})
            assert answer.status_code == 422, answer.text
    assert "https only" in answer.text
    assert not {info.name for info in await host_services.listing()} & set(refused)


async def test_the_exporter_probes_every_kind(secrets_and_hosts):
    exporter = Exporter(ExporterSettings())
    await exporter.probe()
    probed = {sample.labels["host"]: sample.value for metric in exporter.service.host_up.collect()
              for sample in metric.samples}
    assert {name: probed.get(name) for name in KINDS} == dict.fromkeys(KINDS, 1.0)


async def test_prefect_registers_every_kind_from_blocks_hosts(prefect_server):
    registered = subprocess.run([str(Path(sys.executable).with_name("prefect")), "block", "register", "-m", "blocks.hosts"],
                                capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "300"})
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert "Successfully registered 3 blocks" in registered.stdout, registered.stdout
    async with get_client() as client:
        slugs = {(await client.read_block_type_by_slug(kind.block.get_block_type_slug())).slug for kind in REGISTRY.values()}
    assert slugs == {"sms-ssh-host", "sms-local-host", "sms-windows-host"}
