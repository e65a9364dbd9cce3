"""The transports against real peers: the worker's own machine and a real OpenSSH server."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from pathlib import Path

import pytest

from sms_plugin.errors import AuthenticationFailed, HostKeyError, HostUnreachable, TransportError
from sms_plugin.transports.base import Plan, OutputLine, Transport
from sms_plugin.transports.interpreters import INTERPRETERS
from sms_plugin.transports.ssh import SSHTransport, fetch_host_key, fingerprint

pytestmark = pytest.mark.integration

SHELLS = ["bash", "sh", "ksh"]
ECHO_ARGS = {
    shell: 'for a in "$@"; do printf "%s" "$a" | od -An -v -tx1 | tr -d " \\n"; echo; done\n'
    for shell in SHELLS
} | {"python3": "import sys\nfor a in sys.argv[1:]:\n    print(a.encode('utf-8', 'surrogateescape').hex())\n"}
EXIT_WITH = {shell: 'echo "to out"; echo "to err" >&2; exit "$1"\n' for shell in SHELLS} | {
    "python3": "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(int(sys.argv[1]))\n"
}
HOSTILE = [
    "it's", 'say "hi"', "$(touch /tmp/sms-pwned)", "`id`", "a;b && c | d", "line1\nline2", "*", "?[a]",
    "~", "$HOME", "ünï©ødé 日本 🚀", "", " lead and trail ", "back\\slash", "-n", "--", "%PATH%", "!bang",
    "tab\there", "{a,b}", "> /tmp/sms-redirect",
]


async def run(transport: Transport, interpreter: str, content: str, args: list[str], **kw) -> tuple[int, list[OutputLine]]:
    """Sends ``content`` as a run does (SSH: on the launch channel's stdin), runs it with
    ``interpreter`` and returns (exit code, output lines)."""
    spec = INTERPRETERS[interpreter]
    path = f"{await transport.scratch_dir()}/{uuid.uuid4().hex}{spec.suffix}"
    try:
        process = await transport.launch_script(content.encode(), spec.plan(path, args, **kw))
        lines = [line async for line in process.lines()]
        return await process.wait(), lines
    finally:
        await transport.remove(path)


@pytest.mark.parametrize("interpreter", [*SHELLS, "python3"])
@pytest.mark.parametrize("code", [0, 1, 42])
async def test_exit_code_and_streams(transport, interpreter, code):
    exit_code, lines = await run(transport, interpreter, EXIT_WITH[interpreter], [str(code)])
    assert exit_code == code
    assert [line.text for line in lines if line.stream == "stdout"] == ["to out"]
    assert [line.text for line in lines if line.stream == "stderr"] == ["to err"]


@pytest.mark.parametrize("interpreter", [*SHELLS, "python3"])
async def test_hostile_arguments_arrive_byte_for_byte(transport, interpreter):
    exit_code, lines = await run(transport, interpreter, ECHO_ARGS[interpreter], HOSTILE)
    assert exit_code == 0, lines
    assert [bytes.fromhex(line.text).decode() for line in lines] == HOSTILE


async def test_environment_values_and_working_dir_arrive_unchanged(transport):
    value = "x'; $(id) `id` \"q\" \n ü *"
    script = 'printf "%s" "$TEST_VALUE" | od -An -v -tx1 | tr -d " \\n"; echo; pwd\n'
    code, lines = await run(transport, "sh", script, [], env={"TEST_VALUE": value}, cwd="/")
    assert code == 0
    assert [bytes.fromhex(lines[0].text).decode(), lines[1].text] == [value, "/"]


async def test_200000_lines_arrive_complete_and_in_order(transport):
    code, lines = await run(transport, "sh", "seq 1 200000\n", [])
    assert code == 0
    assert [line.text for line in lines] == [str(n) for n in range(1, 200001)]


async def test_utf8_output_survives_and_bad_bytes_are_replaced(transport):
    script = "printf 'h\\303\\251llo w\\303\\266rld \\346\\227\\245\\346\\234\\254 \\360\\237\\232\\200\\n'; printf 'bad \\377 byte\\n'\n"
    code, lines = await run(transport, "sh", script, [])
    assert code == 0
    assert [line.text for line in lines] == ["héllo wörld 日本 🚀", "bad \ufffd byte"]


def _alive(transport: Transport, ssh_server, marker: str) -> list[str]:
    if isinstance(transport, SSHTransport):
        return [p for p in ssh_server.processes(marker) if " Z" not in p]
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and " Z" not in line.split(None, 2)[1:2][0]]


async def test_kill_ends_the_whole_tree_including_backgrounded_grandchildren(transport, request):
    ssh_server = request.getfixturevalue("ssh_server") if isinstance(transport, SSHTransport) else None
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"  # a unique sleep duration, seen in the process table
    script = (
        f"sleep {marker} &\n(sleep {marker}; true) &\nsh -c 'sleep {marker} & wait' &\n"
        f"nohup sleep {marker} >/dev/null 2>&1 &\ntrap '' TERM\necho started\nsleep {marker}\n"
    )
    spec = INTERPRETERS["bash"]
    path = f"{await transport.scratch_dir()}/{marker}.sh"
    await transport.upload(script.encode(), path)
    process = await transport.launch(spec.plan(path, []))
    assert process.pid and process.pid > 1
    lines = process.lines()
    assert (await anext(lines)).text == "started"
    for _ in range(50):  # the backgrounded children start asynchronously
        if len(_alive(transport, ssh_server, f"sleep {marker}")) >= 5:
            break
        await asyncio.sleep(0.1)
    assert len(_alive(transport, ssh_server, f"sleep {marker}")) >= 5
    await process.stop(grace_seconds=1)
    assert await asyncio.wait_for(process.wait(), 10) == 128 + 9  # the script ignored TERM
    await asyncio.sleep(0.2)
    assert _alive(transport, ssh_server, f"sleep {marker}") == []
    await transport.remove(path)


async def test_children_left_behind_when_the_script_exits_are_stopped(transport, request):
    ssh_server = request.getfixturevalue("ssh_server") if isinstance(transport, SSHTransport) else None
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    code, lines = await asyncio.wait_for(run(transport, "sh", f"sleep {marker} &\necho bye\nexit 3\n", []), 15)
    assert (code, [line.text for line in lines]) == (3, ["bye"])
    assert _alive(transport, ssh_server, f"sleep {marker}") == []


async def test_a_sent_script_is_private_has_no_stdin_keeps_the_umask_and_is_removed_at_the_end(ssh_target):
    run_id = uuid.uuid4().hex
    async with await SSHTransport.connect(ssh_target) as ssh:
        login_umask = await ssh.launch(Plan(program=("sh", "-c", "umask")))
        expected = [line.text async for line in login_umask.lines()]
        folder = await ssh.uploads_of(run_id)
        script = 'umask; stat -c %a "$0" "$(dirname "$0")"; cat; echo "stdin ended"\n'
        process = await ssh.launch_script(script.encode(), INTERPRETERS["sh"].plan(f"{folder}/x.sh", [], run_id=run_id))
        assert Path(folder).is_dir()
        lines = [line.text async for line in process.lines()]
        assert await process.wait() == 0
        assert lines == [*expected, "600", "700", "stdin ended"]
        assert not Path(folder).exists()  # the end-of-run check removed it
        assert Path(folder).parent.is_dir()


async def test_start_failure_is_reported_clearly(transport):
    with pytest.raises(TransportError, match="could not be started|starting the script failed"):
        await transport.launch(Plan(program=("sh", "-c", "true"), cwd="/no/such/folder"))


async def test_unknown_host_key_is_refused(ssh_target):
    with pytest.raises(HostKeyError, match=r"not trusted \(ssh-ed25519 SHA256:"):
        await SSHTransport.connect(dataclasses.replace(ssh_target, host_keys=[]))


async def test_changed_host_key_is_refused(ssh_target):
    import paramiko

    impostor = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    other = impostor or paramiko.RSAKey.generate(2048)
    pinned = [f"{other.get_name()} {other.get_base64()}"]
    with pytest.raises(HostKeyError, match="CHANGED"):
        await SSHTransport.connect(dataclasses.replace(ssh_target, host_keys=pinned))


async def test_fetched_host_key_is_one_of_the_servers_keys(ssh_server):
    key = await asyncio.to_thread(fetch_host_key, ssh_server.host, ssh_server.port)
    assert f"{key.get_name()} {key.get_base64()}" in ssh_server.host_public_keys
    assert fingerprint(key).startswith("SHA256:") and len(fingerprint(key)) == 50


async def test_bad_password_fails_clearly(ssh_target):
    target = dataclasses.replace(ssh_target, private_key=None, password="wrong")
    with pytest.raises(AuthenticationFailed, match="refused the credentials"):
        await SSHTransport.connect(target)


async def test_password_login_works(ssh_target, ssh_server):
    target = dataclasses.replace(ssh_target, private_key=None, password=ssh_server.password)
    async with await SSHTransport.connect(target) as ssh:
        code, lines = await run(ssh, "sh", "id -un\n", [])
    assert (code, [line.text for line in lines]) == (0, [ssh_server.username])


async def test_unreachable_host_fails_fast(ssh_target):
    from infra.testbed.ports import free_port

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HostUnreachable, match="cannot connect"):
        await SSHTransport.connect(dataclasses.replace(ssh_target, port=free_port()))
    assert loop.time() - started < 5
