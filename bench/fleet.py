"""Benchmark: an SMS fleet run against ansible-core ad-hoc ``raw``, on the same inventory entries.

On a loopback fleet of the test bed (``infra/testbed/fleet.py``: a few sshd processes, N host
entries pointing at them, written both as SMS host blocks and as an Ansible inventory with a
``known_hosts`` file), measures side by side in one run:
- ``connections``: SSH handshakes + one-line executions per second through the SMS transport
  (a new connection each, ``SMS_SSH_HANDSHAKES`` at a time) and through bare paramiko
  (``connect`` + ``exec_command``, as many threads), the floor and the transport's cost;
- ``executions``: the host side of one execution, on pooled connections to one sshd, 10 at a
  time: the command as a run sends it (script on the launch channel, run id, end-of-run check,
  folder removed) against a bare ``exec_command`` of it (the floor), sshd CPU per execution;
- ``ansible``: ``ansible fleet -m raw -a CMD -f F`` for F = 50 and each of ``--forks``;
- ``sms``: one SMS fleet run of the same command on all N hosts (its worker's whole process tree),
  every host that did not succeed listed with its state and message;
- ``stop``: an SMS fleet run of a long ``sleep`` on all N hosts, stopped once the first hosts run:
  seconds from the stop request until no process of the run is left on any sshd.
For each side: total seconds, host executions per second, peak RSS of the whole process tree
(sampled every 0.1 s, orphans such as ssh ControlPersist masters included) and CPU seconds.

Run as root from the repository root:
    .venv/bin/python bench/fleet.py                       # 1,000 hosts, 4 sshd, everything
    .venv/bin/python bench/fleet.py --hosts 100 --only connections,ansible
    .venv/bin/python bench/fleet.py --profile             # + cProfile of the connections measure
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import ctypes
import io
import os
import pstats
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-fleet-"))
os.environ.update(PREFECT_HOME=str(_TMP / "prefect-home"), SMS_HOME=str(_TMP / "sms-home"))
os.environ.pop("PREFECT_API_URL", None)

import paramiko  # noqa: E402

from infra.testbed.fleet import Fleet, FleetEntry  # noqa: E402
from infra.testbed.process import cpu_seconds, process_tree  # noqa: E402
from sms_plugin.transports.base import Plan  # noqa: E402
from sms_plugin.transports.interpreters import INTERPRETERS  # noqa: E402
from sms_plugin.transports.ssh import HANDSHAKES, ConnectionPool, SSHTarget, SSHTransport  # noqa: E402

COMMAND = "echo ok"
ROWS: list[tuple[str, str, str, str, str, str, str]] = []
"""side, total seconds, host executions/s, peak RSS MB, CPU seconds, sshd CPU seconds, note"""
_PR_SET_CHILD_SUBREAPER = 36


class TreeSampler:
    """Peak RSS and CPU seconds of this process's descendants (orphans re-parented to it too:
    it is a child subreaper) but the fleet's sshd trees, sampled every ``interval`` seconds in a
    thread; and the CPU seconds the sshd trees spent meanwhile (the server side)."""

    def __init__(self, fleet: Fleet, include_self: bool, interval: float = 0.1, others: frozenset[int] = frozenset()) -> None:
        self.servers = {server.pid for server in fleet.all_servers()}
        self.others = set(others)
        """Trees left out of both figures (e.g. the Prefect server)."""
        self.include_self = include_self
        self.interval = interval
        self.peak_kb = 0
        self._seen: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _pids(self) -> set[int]:
        me = os.getpid()
        parents: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        found = {me}
        grew = True
        while grew:
            children = {pid for pid, ppid in parents.items() if ppid in found} - found - self.servers - self.others
            found |= children
            grew = bool(children)
        return found if self.include_self else found - {me}

    def _sample(self) -> None:
        while not self._done.is_set():
            total = 0
            for pid in self._pids():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
                self._seen.add(pid)
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._children_before = _children_cpu()
        self._self_before = _self_cpu()
        self._servers_before = _tree_cpu(self.servers)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        time.sleep(2)  # ended sshd sessions and orphans are reaped into their parents' CPU figures
        for pid in self._seen - {os.getpid()}:  # orphans that ended are ours to reap: their CPU counts
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.cpu = _children_cpu() - self._children_before
        self.server_cpu = _tree_cpu(self.servers) - self._servers_before
        if self.include_self:
            self.cpu += _self_cpu() - self._self_before


def _tree_cpu(roots: set[int]) -> float:
    """CPU seconds of the processes under ``roots``, those that ended included."""
    pids = set().union(*(process_tree(root) for root in roots))
    return cpu_seconds(pids)


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def _self_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system



def row(side: str, hosts: int, seconds: float, sampler: TreeSampler, note: str) -> None:
    cells = (f"{seconds:.1f}", f"{hosts / seconds:.1f}", f"{sampler.peak_kb / 1024:.0f}", f"{sampler.cpu:.1f}",
             f"{sampler.server_cpu:.1f}")
    ROWS.append((side, *cells, note))
    print(f"  {side}: {seconds:.1f} s, {hosts / seconds:.1f} hosts/s, peak RSS {cells[2]} MB, CPU {cells[3]} s, "
          f"sshd CPU {cells[4]} s ({note})", flush=True)


# --- connections: handshakes + one-line executions per second ---------------------------------

def target_of(entry: FleetEntry) -> SSHTarget:
    assert entry.server is not None
    return SSHTarget(entry.address, entry.port, entry.server.username, private_key=entry.server.private_key_pem,
                     host_keys=[entry.pinned_key])


def raw_paramiko(entry: FleetEntry) -> None:
    """The floor: bare paramiko connect (key pinned), ``exec_command``, read, close."""
    assert entry.server is not None
    client = paramiko.SSHClient()
    key_type, blob = entry.pinned_key.split()
    pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    client.get_host_keys().add(f"[{entry.address}]:{entry.port}", key_type, pinned)
    client.connect(entry.address, entry.port, entry.server.username,
                   pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(entry.server.private_key_pem)),
                   allow_agent=False, look_for_keys=False)
    try:
        _, stdout, _ = client.exec_command(COMMAND)
        assert stdout.read() == b"ok\n"
    finally:
        client.close()


async def sms_connection(entry: FleetEntry) -> None:
    """A new SMS connection (own pool: no reuse), the command through the launcher, output read."""
    transport = await SSHTransport.connect(target_of(entry), pool=ConnectionPool())
    try:
        process = await transport.launch(Plan(program=("sh", "-c", COMMAND), run_id=os.urandom(8).hex()))
        lines = [line.text async for line in process.lines()]
        assert await process.wait() == 0 and lines == ["ok"], lines
    finally:
        await transport.close()
        transport._lease.client.close()


def profiled(run: Callable[[], float], enabled: bool, label: str) -> float:
    if not enabled:
        return run()
    profile = cProfile.Profile()
    seconds = profile.runcall(run)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
    print(f"--- cProfile, {label} (tottime; threads other than the caller's are not profiled) ---")
    print("\n".join(out.getvalue().splitlines()[:45]))
    return seconds


def connections(fleet: Fleet, count: int, profile: bool) -> None:
    good = [e for e in fleet.entries if e.kind == "good"]
    entries = [good[n % len(good)] for n in range(count)]
    width = HANDSHAKES.size
    print(f"connections: {count} new connections + `{COMMAND}`, {width} at a time ...", flush=True)

    def raw() -> float:
        began = time.monotonic()
        with ThreadPoolExecutor(width) as pool:
            list(pool.map(raw_paramiko, entries))
        return time.monotonic() - began

    async def sms_all() -> float:
        began = time.monotonic()
        await asyncio.gather(*(sms_connection(e) for e in entries))
        return time.monotonic() - began

    with TreeSampler(fleet, include_self=True) as sampler:
        seconds = profiled(raw, profile, "bare paramiko")
    row(f"bare paramiko connect + exec ({width} threads)", count, seconds, sampler, "floor, new connection each")
    HANDSHAKES.peak = 0
    with TreeSampler(fleet, include_self=True) as sampler:
        seconds = profiled(lambda: asyncio.run(sms_all()), profile, "SMS transport")
    row(f"SMS transport connect + launch ({width} handshakes)", count, seconds, sampler,
        f"new connection each; at most {HANDSHAKES.peak} handshakes at once")


# --- executions: the host side of one execution, on pooled connections ------------------------

EXECUTIONS_AT_ONCE = 10


async def sms_execution(transport: SSHTransport) -> None:
    """``COMMAND`` as a run sends it: the script on the launch channel into the run's folder."""
    run_id = os.urandom(8).hex()
    folder = await transport.uploads_of(run_id)
    plan = INTERPRETERS["sh"].plan(f"{folder}/ok.sh", [], run_id=run_id)
    process = await transport.launch_script(f"{COMMAND}\n".encode(), plan)
    lines = [line.text async for line in process.lines()]
    assert await process.wait() == 0 and lines == ["ok"], lines
    await transport.remove(folder)


async def bare_execution(transport: SSHTransport) -> None:
    """The floor: ``exec_command`` of ``COMMAND`` on the same pooled connection."""
    def run() -> None:
        _, stdout, _ = transport._client.exec_command(COMMAND)
        assert stdout.read() == b"ok\n"

    await asyncio.to_thread(run)


def executions(fleet: Fleet, count: int) -> None:
    target = target_of(next(e for e in fleet.entries if e.kind == "good"))
    print(f"executions: {count} of `{COMMAND}` on pooled connections, {EXECUTIONS_AT_ONCE} at a time ...", flush=True)

    async def measure(one: Callable[[SSHTransport], Awaitable[None]]) -> tuple[float, TreeSampler]:
        pool, gate = ConnectionPool(), asyncio.Semaphore(EXECUTIONS_AT_ONCE)

        async def each() -> None:
            async with gate:
                transport = await SSHTransport.connect(target, pool=pool)
                try:
                    await one(transport)
                finally:
                    await transport.close()

        await asyncio.gather(*(each() for _ in range(EXECUTIONS_AT_ONCE)))  # connections opened before
        with TreeSampler(fleet, include_self=True) as sampler:
            began = time.monotonic()
            await asyncio.gather(*(each() for _ in range(count)))
            seconds = time.monotonic() - began
        pool.close_idle()
        return seconds, sampler

    for label, one in [("bare exec_command on a pooled connection", bare_execution),
                       ("SMS run's launch + end on a pooled connection", sms_execution)]:
        seconds, sampler = asyncio.run(measure(one))
        row(f"{label} ({EXECUTIONS_AT_ONCE} at once)", count, seconds, sampler,
            f"sshd CPU {sampler.server_cpu / count * 1000:.1f} ms per execution")


# --- ansible -----------------------------------------------------------------------------------

ANSIBLE_LINE = re.compile(r"^(\S+) \| (CHANGED|SUCCESS|FAILED|UNREACHABLE!)")


def ansible(fleet: Fleet, forks: int) -> dict[str, int]:
    """One ``ansible -m raw`` over the whole inventory; the count of each outcome."""
    work = _TMP / f"ansible-{forks}"
    work.mkdir()
    inventory = fleet.write_ansible(work / "inventory.ini")
    env = {**os.environ, "ANSIBLE_CONFIG": str(work / "none.cfg"), "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"), "ANSIBLE_STDOUT_CALLBACK": "oneline",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_TIMEOUT": "5", "ANSIBLE_HOME": str(work / "home")}
    ansible_bin = Path(sys.executable).with_name("ansible")
    print(f"ansible -f {forks} ...", flush=True)
    with TreeSampler(fleet, include_self=False) as sampler:
        began = time.monotonic()
        done = subprocess.run([str(ansible_bin), "fleet", "-i", str(inventory), "-m", "raw", "-a", COMMAND,
                               "-f", str(forks)], env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - began
        _end_control_masters(work / "cp")
    outcomes: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if match := ANSIBLE_LINE.match(line):
            outcomes[match.group(2)] = outcomes.get(match.group(2), 0) + 1
    if not outcomes:
        print(done.stdout[-2000:], done.stderr[-2000:])
    row(f"ansible-core raw -f {forks}", len(fleet.entries), seconds, sampler, _summary(outcomes))
    return outcomes


def _end_control_masters(folder: Path) -> None:
    """ssh ControlPersist masters outlive the run (they are Ansible's too): ended and counted."""
    for socket_path in folder.glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "x"], capture_output=True, check=False)


def _summary(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{count} {state.lower().rstrip('!')}" for state, count in sorted(outcomes.items()))


# --- sms ---------------------------------------------------------------------------------------

async def sms_side(fleet: Fleet, only: set[str], parallel: int) -> None:
    """The fleet run and the stop, through an sms worker (in-process runs) on a private Prefect server."""
    from infra.testbed.postgresql import PostgreSQL
    from infra.testbed.prefect_server import PrefectServer
    from infra.testbed.prefect_worker import PrefectWorker
    from sms_plugin import runs, scripts
    from sms_plugin.catalog import Catalog, ScriptSpec, host_executions
    from tests.conftest import talking_to

    with PostgreSQL() as pg, talking_to(PrefectServer(database_url=pg.prefect_url).start()) as server:
        catalog = Catalog()
        catalog.upgrade()
        began = time.monotonic()
        await fleet.register(max_parallel_sessions=10)
        print(f"sms: {len(fleet.entries)} host blocks registered in {time.monotonic() - began:.0f} s", flush=True)
        names = fleet.names()
        quick = f"bench-ok-{os.urandom(3).hex()}"
        await scripts.add(catalog, ScriptSpec(name=quick, interpreter="sh", host=names[0]), f"{COMMAND}\n", author="bench")
        marker = str(6_000_000 + int.from_bytes(os.urandom(3)) % 1_000_000)
        slow = f"bench-sleep-{os.urandom(3).hex()}"
        await scripts.add(catalog, ScriptSpec(name=slow, interpreter="sh", host=names[0]), f"sleep {marker}\n", author="bench")
        env = {"SMS_HOME": os.environ["SMS_HOME"]}
        worker = PrefectWorker(server.api_url, worker_type="sms", extra_env=env, timeout=120).start()
        leave_out = frozenset({server.pid, pg.pid})
        try:
            if "sms" in only:
                print(f"sms fleet run, parallel {parallel} ...", flush=True)
                with TreeSampler(fleet, include_self=False, others=leave_out) as sampler:
                    worker_cpu = _tree_cpu({worker.pid})
                    server_cpu = _tree_cpu({server.pid, pg.pid})
                    began = time.monotonic()
                    run_id = await start_fleet_run(quick, names, parallel)
                    result = await runs.wait(catalog, run_id, timeout=3600, poll=0.5)
                    seconds = time.monotonic() - began
                    server_cpu = _tree_cpu({server.pid, pg.pid}) - server_cpu
                    worker_cpu = _tree_cpu({worker.pid}) - worker_cpu
                sampler.cpu += worker_cpu  # the worker runs on: its CPU is read live, not from a reaped child
                with catalog.session() as session:
                    rows = host_executions(session, run_id)
                    states = [r.state for r in rows]
                    hosts_seconds = (max(r.ended_at for r in rows if r.ended_at)
                                     - min(r.started_at for r in rows if r.started_at)).total_seconds()
                counts = {state: states.count(state) for state in sorted(set(states))}
                for failed in (r for r in rows if r.state != "succeeded"):
                    print(f"  {failed.host}: {failed.state} at {failed.started_at or failed.ended_at}: "
                          f"{failed.message or failed.output_tail[-300:]}", flush=True)
                pickup = await flow_run_pickup(run_id)
                row(f"SMS fleet run, parallel {parallel} (sms worker)", len(names), seconds, sampler,
                    f"{result.state}: {counts}; Prefect server + PostgreSQL CPU {server_cpu:.0f} s; "
                    f"flow run started {pickup:.1f} s after it was created; first script start to last "
                    f"end {hosts_seconds:.1f} s ({len(rows) / hosts_seconds:.1f} host executions/s)")
            if "stop" in only:
                await stop_measure(fleet, catalog, slow, marker, names, parallel)
        finally:
            worker.stop()
            catalog.dispose()


async def start_fleet_run(script: str, names: list[str], parallel: int) -> str:
    """A fleet run of ``script`` on ``names``, created on its deployment as the Prefect UI would."""
    from prefect import get_client

    from sms_plugin.deploy import deployment_name

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(script))
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"script": script, "hosts": names, "policy": {"parallel": parallel}})
    return str(flow_run.id)


async def flow_run_pickup(run_id: str) -> float:
    """Seconds from the flow run's creation to its start (the worker's pickup and set-up)."""
    from prefect import get_client

    async with get_client() as client:
        flow_run = await client.read_flow_run(run_id)
    assert flow_run.created is not None and flow_run.start_time is not None
    return (flow_run.start_time - flow_run.created).total_seconds()


def _sleeping(fleet: Fleet, marker: str) -> int:
    """Live ``sleep MARKER`` processes of the test user (every sshd of the fleet logs in as it)."""
    return len([p for p in fleet.servers[0].processes(f"sleep {marker}") if " Z" not in p])


async def stop_measure(fleet: Fleet, catalog: object, script: str, marker: str, names: list[str], parallel: int) -> None:
    from sms_plugin import runs

    print(f"stop: {len(names)} hosts of `sleep`, parallel {parallel} ...", flush=True)
    run_id = await start_fleet_run(script, names, parallel)
    deadline = time.monotonic() + 600
    while _sleeping(fleet, marker) < parallel and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    running = _sleeping(fleet, marker)
    requested = time.monotonic()
    await runs.stop(run_id)
    while _sleeping(fleet, marker) and time.monotonic() - requested < 120:
        await asyncio.sleep(0.05)
    gone = time.monotonic() - requested
    left = _sleeping(fleet, marker)
    result = await runs.wait(catalog, run_id, timeout=300, poll=0.5)  # type: ignore[arg-type]
    STOPS.append(f"stop of a {len(names)}-host run with {running} scripts running: nothing left after {gone:.2f} s "
                 f"({left} left), run {result.state} (goal: ≤ 10 s)")
    print("  " + STOPS[-1], flush=True)


STOPS: list[str] = []


# --- main --------------------------------------------------------------------------------------

MEASURES = ("connections", "executions", "ansible", "sms", "stop")


def table(hosts: int) -> None:
    print(f"\nFleet on loopback sshd: {hosts} hosts, `{COMMAND}` (CPU seconds: the side's whole process tree)")
    print(f"| {'side':<52} | total s | host executions/s | peak RSS MB | CPU s | sshd CPU s | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side, *cells, note in ROWS:
        print(f"| {side:<52} | {' | '.join(cells)} | {note} |")
    for line in STOPS:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=4, help="sshd processes serving the good hosts")
    parser.add_argument("--forks", default="10,20", help="Ansible fork counts tried besides 50")
    parser.add_argument("--parallel", type=int, default=50, help="the SMS run's hosts at a time")
    parser.add_argument("--connections", type=int, default=200, help="new connections of the connections measure")
    parser.add_argument("--executions", type=int, default=300, help="executions of the executions measure")
    parser.add_argument("--only", default=",".join(MEASURES))
    parser.add_argument("--profile", action="store_true", help="cProfile the connections measure")
    options = parser.parse_args()
    only = set(options.only.split(","))
    if unknown := only - set(MEASURES):
        sys.exit(f"unknown measure(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        with Fleet(options.hosts, servers=options.servers) as fleet:
            if "connections" in only:
                connections(fleet, options.connections, options.profile)
            if "executions" in only:
                executions(fleet, options.executions)
            if "ansible" in only:
                for forks in [50, *(int(f) for f in options.forks.split(",") if f)]:
                    ansible(fleet, forks)
            if only & {"sms", "stop"}:
                asyncio.run(sms_side(fleet, only, options.parallel))
    finally:
        table(options.hosts)


if __name__ == "__main__":
    main()
