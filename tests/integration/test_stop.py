"""Stops that always stop: daemonised children, state files, kills without a process handle,
and the launcher on plain POSIX shells. Real sshd and the worker's own machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import uuid

import pytest

from sms_plugin.transports import posix
from sms_plugin.transports.base import Plan, Transport
from sms_plugin.transports.interpreters import INTERPRETERS
from sms_plugin.transports.ssh import SSHTransport

pytestmark = pytest.mark.integration


def _marker() -> str:
    return str(uuid.uuid4().int % 10**6 + 2 * 10**6)


def _alive(transport: Transport, request: pytest.FixtureRequest, pattern: str) -> list[str]:
    if isinstance(transport, SSHTransport):
        lines = request.getfixturevalue("ssh_server").processes(pattern)
    else:
        ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
        lines = [line for line in ps.splitlines() if pattern in line]
    return [line for line in lines if " Z" not in line and "<defunct>" not in line]


ESCAPING_CHILDREN = (
    "sleep {m} &\n"                                   # backgrounded, same group
    "setsid sleep {m} &\n"                            # a session of its own
    "(sh -c 'sleep {m} & exit 0' &)\n"                # double fork: re-parented, same group
    "(setsid sh -c 'trap \"\" TERM; sleep {m}' &)\n"  # double fork + setsid + ignores TERM
    "echo started\nsleep {m}\n"
)


async def _start(transport: Transport, content: str, run_id: str | None):
    path = f"{await transport.scratch_dir()}/{uuid.uuid4().hex}.sh"
    await transport.upload(content.encode(), path)
    process = await transport.launch(INTERPRETERS["sh"].plan(path, [], run_id=run_id))
    lines = process.lines()
    assert (await anext(lines)).text == "started"
    return process, path


async def test_stop_kills_daemonised_children_and_children_ignoring_term(transport, request):
    marker, run_id = _marker(), str(uuid.uuid4())
    process, path = await _start(transport, ESCAPING_CHILDREN.format(m=marker), run_id)
    for _ in range(50):  # the children start asynchronously
        if len(_alive(transport, request, f"sleep {marker}")) == 6:
            break
        await asyncio.sleep(0.1)
    assert len(_alive(transport, request, f"sleep {marker}")) == 6  # 5 sleeps and one "sh -c ... sleep"
    started = asyncio.get_running_loop().time()
    await process.stop(grace_seconds=1)
    await asyncio.wait_for(process.wait(), 10)
    assert _alive(transport, request, f"sleep {marker}") == []
    print(f"kill with a TERM-ignoring escaped child: {asyncio.get_running_loop().time() - started:.2f} s")
    assert await transport.recorded_group(run_id) is None  # the state file is gone too
    await transport.remove(path)


async def test_state_file_names_the_process_group_while_the_run_lives(transport, request):
    marker, run_id = _marker(), str(uuid.uuid4())
    process, path = await _start(transport, f"echo started\nsleep {marker}\n", run_id)
    assert await transport.recorded_group(run_id) == process.pid
    await process.stop(grace_seconds=1)
    await process.wait()
    assert await transport.recorded_group(run_id) is None
    quick = await transport.launch(Plan(program=("sh", "-c", "echo started; exit 7"), run_id=str(uuid.uuid4())))
    assert [line.text async for line in quick.lines()] == ["started"]
    assert await quick.wait() == 7
    assert await transport.recorded_group(quick.run_id) is None  # removed by the leader itself
    await transport.remove(path)


async def test_a_new_connection_can_kill_a_run_it_did_not_start(transport, request, ssh_target, tmp_path):
    """What the reaper does after the worker died: only the run id (and the state file) are known."""
    marker, run_id = _marker(), str(uuid.uuid4())
    process, path = await _start(transport, ESCAPING_CHILDREN.format(m=marker), run_id)
    if isinstance(transport, SSHTransport):
        other: Transport = await SSHTransport.connect(ssh_target)
    else:
        other = transport
    try:
        pgid = await other.recorded_group(run_id)
        assert pgid == process.pid
        assert await other.end_run(pgid, run_id, grace_seconds=1) is True
        assert _alive(transport, request, f"sleep {marker}") == []
        assert await other.end_run(pgid, run_id, grace_seconds=1) is False  # nothing left to find
    finally:
        if other is not transport:
            await other.close()
    await asyncio.wait_for(process.wait(), 10)
    await transport.remove(path)


@pytest.mark.parametrize("shell", ["dash", "ksh", "bash"])
@pytest.mark.parametrize("with_setsid", [True, False], ids=["setsid", "no-setsid"])
def test_launcher_runs_on_plain_posix_shells_without_bash(tmp_path, shell, with_setsid):
    """The launcher line under dash, ksh and bash, with a PATH that has no bash (but for bash's own
    case) and optionally no setsid, started in a session of its own as sshd starts every exec
    channel, the script sent on stdin into a run folder: with setsid the launcher ends the run
    (state file and folder removed, the done mark last), without it the leader removes the state
    file and the client's check the rest."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ["ps", "mkdir", "chmod", "rm", "env", "cat", "sleep", "grep", "tr", "sh", shell]:
        os.symlink(shutil.which(tool), tools / tool)
    if with_setsid:
        os.symlink(shutil.which("setsid"), tools / "setsid")
    home = tmp_path / "home"
    (home / ".sms/state").mkdir(parents=True, mode=0o755)  # as an older SMS left it: listable by all
    run_id = str(uuid.uuid4())
    folder = home / ".sms/run" / run_id
    script = ('command -v bash || echo "no bash"; echo "marker=$SMS_RUN_ID"; cat "$HOME/.sms/state/$SMS_RUN_ID"; umask; '
              'printf "%s\\n" "$MULTI" | tr "\\n" "~"; echo; echo "$run $s $f $n $e $i $l $p $rc $d $pg"; exit 9\n')
    names = ["run", "s", "f", "n", "e", "i", "l", "p", "rc", "d", "pg"]  # what shell scripts like to call theirs
    env = {"MULTI": "one\n two 'q' \"$(id)\" \\ `x` ü", "OTHER": ""} | {name: f"my-{name}" for name in names}
    plan = Plan(program=("sh", str(folder / "s.sh"), "a b"), run_id=run_id, env=env)
    line = posix.render(plan, shell=str(tools / shell), sent=str(folder / "s.sh"), folder=str(folder), nonce="n0nce")
    done = subprocess.run(
        [shutil.which("setsid"), "-w", str(tools / shell), "-c", line], input=posix.stdin_of(plan, script.encode()),
        env={"PATH": str(tools), "HOME": str(home)}, capture_output=True, timeout=30,
    )
    out = done.stdout.decode().splitlines()
    assert done.returncode == 9, done.stderr
    assert posix.parse_pgid(out[0]) is not None
    assert out[1:3] == ["no bash" if shell != "bash" else str(tools / "bash"), f"marker={run_id}"]
    assert out[3].split() == [run_id, str(posix.parse_pgid(out[0]))]
    mask = os.umask(0o022)
    os.umask(mask)
    assert out[4] == f"{mask:04o}"  # the script keeps the umask it was given, not its folder's
    assert out[5] == env["MULTI"].replace("\n", "~") + "~"  # the variables came on stdin, before the script
    assert out[6] == " ".join(f"my-{name}" for name in names)  # the launcher's own variables are others
    assert stat.S_IMODE((home / ".sms/state").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".sms/run").stat().st_mode) == 0o700
    assert not (home / ".sms/state" / run_id).exists()
    if with_setsid:
        assert done.stdout.endswith(posix.done_mark("n0nce")) and len(out) == 8
        assert not folder.exists()
    else:
        assert len(out) == 7 and folder.is_dir()
    assert done.stderr == b""


def test_launcher_refuses_to_run_outside_a_group_of_its_own(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ["ps", "sh", "dash"]:
        os.symlink(shutil.which(tool), tools / tool)
    line = posix.render(Plan(program=("sh", "-c", "echo ran")), shell=str(tools / "dash"))
    # No setsid on PATH and not a session leader: the leader is not alone in its group.
    done = subprocess.run([str(tools / "dash"), "-c", line], env={"PATH": str(tools)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 126
    assert "cannot start the script in a process group of its own" in done.stderr
    assert "ran" not in done.stdout


async def test_stop_stays_fast_with_many_runs_in_flight(transport, request):
    """Twelve runs wait for their scripts at once; stopping one must not queue behind them."""
    marker = _marker()
    leases: list[Transport] = []
    for _ in range(12):  # each run its own lease, as runs do (SSH: pooled, 5 runs per connection)
        ssh = isinstance(transport, SSHTransport)
        leases.append(await SSHTransport.connect(request.getfixturevalue("ssh_target")) if ssh else transport)
    processes = [
        await lease.launch(Plan(program=("sh", "-c", f"echo started; sleep {marker}"), run_id=str(uuid.uuid4())))
        for lease in leases
    ]
    waits = [asyncio.create_task(process.wait()) for process in processes]
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(processes[-1].stop(grace_seconds=1), 5)
    assert await asyncio.wait_for(waits[-1], 5) == 128 + 15
    took = loop.time() - started
    print(f"stop with 12 runs in flight: {took:.2f} s")
    assert took < 2
    await asyncio.gather(*(process.stop(grace_seconds=1) for process in processes[:-1]))
    await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert _alive(transport, request, f"sleep {marker}") == []
    for lease in {id(lease): lease for lease in leases}.values():
        if lease is not transport:
            await lease.close()


async def test_children_that_detach_their_output_do_not_outlive_the_run(transport, request):
    marker, run_id = _marker(), str(uuid.uuid4())
    script = (
        f"sleep {marker} >/dev/null 2>&1 &\nnohup sleep {marker} >/dev/null 2>&1 &\n"
        f"setsid sleep {marker} >/dev/null 2>&1 </dev/null &\necho bye\n"
    )
    process = await transport.launch(Plan(program=("sh", "-c", script), run_id=run_id))
    assert [line.text async for line in process.lines()] == ["bye"]
    assert await asyncio.wait_for(process.wait(), 15) == 0
    assert _alive(transport, request, f"sleep {marker}") == []


async def test_a_run_that_left_nothing_is_ended_by_its_launcher(ssh_target):
    """The launcher's own end-of-run check: no second channel, the state file and folder gone."""
    run_id = str(uuid.uuid4())
    async with await SSHTransport.connect(ssh_target) as ssh:
        folder = await ssh.uploads_of(run_id)
        script = "echo one\nprintf 'no newline at the end'\nexit 4\n"
        process = await ssh.launch_script(script.encode(), INTERPRETERS["sh"].plan(f"{folder}/x.sh", [], run_id=run_id))
        assert [line.text async for line in process.lines()] == ["one", "no newline at the end"]
        assert await process.wait() == 4
        assert process.left_nothing
        assert not os.path.exists(folder)
        assert await ssh.recorded_group(run_id) is None


@pytest.mark.parametrize("interpreter", ["sh", "bash", "ksh"])
async def test_a_daemon_that_left_the_group_is_found_when_the_script_ends(ssh_target, ssh_server, interpreter):
    """A child that left the run's process group and session (setsid) with its output detached:
    the group is empty when the script ends, only the marker scan finds the child, which is killed."""
    marker, run_id = _marker(), str(uuid.uuid4())
    async with await SSHTransport.connect(ssh_target) as ssh:
        folder = await ssh.uploads_of(run_id)
        script = f"setsid sleep {marker} >/dev/null 2>&1 </dev/null &\nsleep 0.3\necho bye\n"
        process = await ssh.launch_script(script.encode(), INTERPRETERS[interpreter].plan(f"{folder}/x.sh", [], run_id=run_id))
        assert [line.text async for line in process.lines()] == ["bye"]
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert not process.left_nothing
        assert [p for p in ssh_server.processes(f"sleep {marker}") if " Z" not in p] == []
        assert not os.path.exists(folder)
        assert await ssh.recorded_group(run_id) is None
