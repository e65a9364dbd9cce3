"""Every confirming or asking command, run the way cron, CI or `ssh host sms …` run it: stdin is not
a terminal. Each refuses with one line naming the flag that skips the question (exit status 2), and
nothing happened; a value asked for is read from a pipe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from blocks.hosts import load_host
from sms_plugin import AsyncSMSClient
from sms_plugin.errors import NotFound

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def unattended(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`sms ARGS` with stdin closed (or fed ``stdin`` through a pipe): no terminal anywhere."""
    return subprocess.run([SMS, *args], capture_output=True, text=True, timeout=120, env=os.environ,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def assert_refused_naming_yes(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "stdin is not a terminal" in line and "--yes" in line, line
    assert "Traceback" not in done.stdout + done.stderr


@pytest.fixture
async def sdk(prefect_server) -> AsyncSMSClient:
    client = AsyncSMSClient(user="tester")
    await client.add_host("local", "local", overwrite=True)
    return client


async def test_script_rm_without_a_terminal_refuses_and_keeps_the_script(sdk):
    name = unique("keep")
    await sdk.add_script(name, interpreter="sh", host="local", content="echo kept\n")
    assert_refused_naming_yes(await asyncio.to_thread(unattended, "script", "rm", name))
    assert (await sdk.script(name)).name == name
    # `yes | sms script rm` is no answer either: a pipe is not a person
    assert_refused_naming_yes(await asyncio.to_thread(unattended, "script", "rm", name, stdin="y\n"))
    assert (await sdk.script(name)).name == name


async def test_host_group_remove_without_a_terminal_keeps_the_group(sdk):
    name = unique("grp")
    await sdk.add_host_group(name, "local")
    assert_refused_naming_yes(await asyncio.to_thread(unattended, "host", "group", "remove", name))
    assert (await sdk.host_group(name)).name == name


async def test_apply_and_import_without_a_terminal_change_nothing(sdk, ssh_server, tmp_path):
    host = unique("ah")
    plan = tmp_path / "catalog.yaml"
    plan.write_text(f"hosts:\n  - name: {host}\n    type: local\n")
    inventory = tmp_path / "inventory.yaml"
    imported = unique("ih")
    (tmp_path / "id").write_text(ssh_server.private_key_pem)
    inventory.write_text(f"hosts:\n  - name: {imported}\n    address: 127.0.0.1\n    username: ops\n"
                         f"    private_key_file: id\n")
    for done in await asyncio.gather(asyncio.to_thread(unattended, "apply", str(plan)),
                                     asyncio.to_thread(unattended, "host", "import", str(inventory))):
        assert_refused_naming_yes(done)
    for name in (host, imported):
        with pytest.raises(NotFound):
            await load_host(name)


async def test_host_trust_without_a_terminal_pins_nothing(sdk, ssh_server, tmp_path):
    host = unique("th")
    key_file = tmp_path / "id"
    key_file.write_text(ssh_server.private_key_pem)
    added = await asyncio.to_thread(unattended, "host", "add", host, "--ssh", ssh_server.host, "--port",
                                    str(ssh_server.port), "--user", ssh_server.username, "--key-file", str(key_file))
    assert added.returncode == 0, added.stderr
    done = await asyncio.to_thread(unattended, "host", "trust", host)
    assert_refused_naming_yes(done)
    assert "SHA256:" in done.stdout  # the fingerprint was shown, then nothing was pinned
    assert (await load_host(host)).host_keys == []


async def test_a_password_is_read_from_a_pipe_and_refused_from_nothing(sdk, ssh_server):
    piped, closed = unique("pw"), unique("nopw")
    common = ["--ssh", ssh_server.host, "--port", str(ssh_server.port), "--user", ssh_server.username, "--ask-password"]
    done = await asyncio.to_thread(unattended, "host", "add", piped, *common, stdin="s3cret-from-pipe\n")
    assert done.returncode == 0, done.stderr
    assert (await load_host(piped)).password.get_secret_value() == "s3cret-from-pipe"
    windows = unique("nopw-win")  # add-windows always asks: never a password on the command line
    for done in await asyncio.gather(
        asyncio.to_thread(unattended, "host", "add", closed, *common),
        asyncio.to_thread(unattended, "host", "add-windows", windows, "--address", "192.0.2.7", "--user", "ops"),
    ):
        assert done.returncode == 2 and "Password is needed" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    for name in (closed, windows):
        with pytest.raises(NotFound):
            await load_host(name)


@pytest.mark.parametrize("args", [["script", "rm"], ["--no-such-option"], ["run"], ["host", "nope"]])
def test_usage_errors_are_exit_2_without_a_traceback(args):
    done = unattended(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Error:" in done.stderr and "Usage:" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
