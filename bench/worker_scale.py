"""Benchmark: the in-process ``sms`` worker against Prefect's process worker and raw paramiko.

On a private sshd, PostgreSQL and a Prefect server on it (all from the test bed), measures:
- start latency, request → first remote instruction (the script's first line writes a timestamp):
  sms worker vs process worker (PREFECT_WORKER_QUERY_SECONDS=1) vs raw paramiko ``exec_command``;
- memory per running script: N concurrent remote ``sleep`` runs on one sms worker (worker RSS
  delta / N) vs the process worker (its process tree's RSS delta / n) at a small count;
- sustained short-run throughput (runs/s): a burst of runs of ``true`` until all have ended;
- stop latency, cancel request → remote process group gone.

Run as root from the repository root:
    .venv/bin/python bench/worker_scale.py [--only MEASURE,...] [N ...]
N: concurrent runs for the memory measure (default 100 300); MEASURE: start, stop, throughput,
memory (default all), e.g. ``--only memory 1000`` for the 1,000-script memory figure alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-"))
os.environ.update(PREFECT_HOME=str(_TMP / "prefect-home"), SMS_HOME=str(_TMP / "sms-home"))
os.environ.pop("PREFECT_API_URL", None)

import paramiko  # noqa: E402
from prefect import get_client  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402

from infra.testbed.postgresql import PostgreSQL  # noqa: E402
from infra.testbed.prefect_server import PrefectServer  # noqa: E402
from infra.testbed.prefect_worker import PrefectWorker  # noqa: E402
from infra.testbed.process import cpu_seconds, process_tree  # noqa: E402
from infra.testbed.sshd import SshServer  # noqa: E402
from sms_plugin import hosts, runs, scripts  # noqa: E402
from sms_plugin.catalog import Catalog, ScriptSpec  # noqa: E402
from bench.run_timing import STAMP_FIRST, all_final, percentiles, start_latency, until  # noqa: E402
from tests.conftest import talking_to  # noqa: E402
from tests.integration.conftest import block_of  # noqa: E402

STAMPS = Path("/tmp") / f"sms-bench-stamps-{uuid.uuid4().hex[:8]}"
ROWS: list[tuple[str, str, str]] = []


def pct(samples: list[float]) -> str:
    p50, p95 = percentiles(samples)
    return f"p50 {p50:.3f} s, p95 {p95:.3f} s (n={len(samples)})"


def rss_kb(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def alive(ssh: SshServer, marker: str) -> int:
    return len([p for p in ssh.processes(f"sleep {marker}") if " Z" not in p])


async def start_many(catalog: Catalog, name: str | list[str], count: int, args: Callable[[int], list[str]] | None = None) -> list[str]:
    """Starts ``count`` runs, 16 requests at a time; of several scripts in turn."""
    gate = asyncio.Semaphore(16)
    names = [name] if isinstance(name, str) else name

    async def one(n: int) -> str:
        async with gate:
            return await runs.start(catalog, names[n % len(names)], args=args(n) if args else None, trigger="cli", user="bench")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def script(catalog: Catalog, pool: str, host: str, content: str) -> str:
    os.environ["SMS_WORK_POOL"] = pool
    name = f"bench-{uuid.uuid4().hex[:6]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host, kill_grace_seconds=1), content, author="bench")
    return name


def raw_latency(ssh: SshServer, count: int) -> list[float]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    key = paramiko.Ed25519Key.from_private_key(__import__("io").StringIO(ssh.private_key_pem))
    client.connect(ssh.host, ssh.port, ssh.username, pkey=key, look_for_keys=False, allow_agent=False)
    samples = []
    for _ in range(count):
        stamp = STAMPS / uuid.uuid4().hex
        requested = time.time()
        client.exec_command(f"date +%s.%N > {stamp}")[1].channel.recv_exit_status()
        samples.append(float(stamp.read_text()) - requested)
    client.close()
    return samples


async def memory(catalog: Catalog, ssh: SshServer, name: str | list[str], worker: PrefectWorker, count: int, tree: bool) -> float:
    """KB of worker RSS per concurrently running remote script (of ``name``, or of several
    scripts in turn)."""
    pids = (lambda: process_tree(worker.pid)) if tree else (lambda: {worker.pid})
    before = rss_kb(pids())
    marker = str(7 * 10**6 + uuid.uuid4().int % 10**6)
    ids = await start_many(catalog, name, count, args=lambda n: [marker])
    ok = await until(lambda: alive(ssh, marker) >= count, max(300, count), 1.0)
    during = rss_kb(pids())
    running = alive(ssh, marker)
    print(f"  {count} runs: {running} running{'' if ok else ' (not all started)'}, RSS {before / 1024:.0f} → {during / 1024:.0f} MB", flush=True)
    gate = asyncio.Semaphore(16)

    async def stop(run_id: str) -> None:
        async with gate:
            await runs.stop(run_id)

    await asyncio.gather(*(stop(run_id) for run_id in ids))
    await until(lambda: all_final(ids), max(300, count), 1.0)
    return (during - before) / max(running, 1)



async def throughput(catalog: Catalog, name: str, count: int, processes: dict[str, Callable[[], set[int]]]) -> tuple[float, dict[str, float]]:
    """Runs/s of a burst of ``count`` runs, and the CPU seconds per run each of ``processes`` spent."""
    before = {label: cpu_seconds(pids()) for label, pids in processes.items()}
    began = time.monotonic()
    ids = await start_many(catalog, name, count)
    await until(lambda: all_final(ids), 900, 0.5)
    rate = count / (time.monotonic() - began)
    return rate, {label: (cpu_seconds(pids()) - before[label]) / count for label, pids in processes.items()}


async def stop_latency(catalog: Catalog, ssh: SshServer, name: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        marker = str(8 * 10**6 + uuid.uuid4().int % 10**6)
        run_id = await runs.start(catalog, name, args=[marker], trigger="cli", user="bench")
        assert await until(lambda: alive(ssh, marker) >= 1, 120), "never started"
        requested = time.monotonic()
        await runs.stop(run_id)
        await until(lambda: alive(ssh, marker) == 0, 120, 0.01)
        samples.append(time.monotonic() - requested)
        await until(lambda: all_final([run_id]), 60, 0.1)
    return samples


MEASURES = ("start", "stop", "throughput", "memory")
HOSTS = 10
"""Host blocks the memory runs are spread over."""


async def bench(ssh: SshServer, pg: PostgreSQL, server: PrefectServer, counts: list[int], only: set[str]) -> None:
    STAMPS.mkdir(mode=0o777)
    STAMPS.chmod(0o777)
    catalog = Catalog()
    catalog.upgrade()
    env = {"SMS_HOME": os.environ["SMS_HOME"]}
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="bench-sms", type="sms"))
        await client.create_work_pool(WorkPoolCreate(name="bench-process", type="process"))
    host = f"bench-{uuid.uuid4().hex[:4]}"
    await hosts.add(host, block_of(ssh, max_parallel_sessions=max(counts) + 50))
    sms_stamp = await script(catalog, "bench-sms", host, STAMP_FIRST)
    proc_stamp = await script(catalog, "bench-process", host, STAMP_FIRST)
    sms_sleep = await script(catalog, "bench-sms", host, 'sleep "$1"\n')
    proc_sleep = await script(catalog, "bench-process", host, 'sleep "$1"\n')
    sms_true = await script(catalog, "bench-sms", host, "true\n")
    proc_true = await script(catalog, "bench-process", host, "true\n")
    # The memory runs are spread over HOSTS host blocks (all this sshd): each host's slot limit is
    # one database row that every run of the host updates, and 1,000 runs on one host measure
    # that row's lock on this 2-core server, not the worker (docs/worker.md).
    sms_sleepers = []
    for n in range(HOSTS):
        await hosts.add(f"{host}-{n}", block_of(ssh, max_parallel_sessions=max(counts) // HOSTS + 10))
        sms_sleepers.append(await script(catalog, "bench-sms", f"{host}-{n}", 'sleep "$1"\n'))

    sms = PrefectWorker(server.api_url, pool="bench-sms", worker_type="sms", limit=max(counts) + 50, extra_env=env, timeout=120).start()
    process = PrefectWorker(server.api_url, pool="bench-process", extra_env=env, timeout=120).start()
    try:
        if "start" in only:
            print("start latency ...")
            ROWS.append(("start latency: sms worker", pct(await start_latency(catalog, sms_stamp, 20, STAMPS)), "goal p50 ≤ 0.3 s, p95 ≤ 0.6 s"))
            ROWS.append(("start latency: process worker (query 1 s)", pct(await start_latency(catalog, proc_stamp, 8, STAMPS)), "baseline"))
            ROWS.append(("start latency: raw paramiko exec", pct(raw_latency(ssh, 20)), "floor"))
        if "stop" in only:
            print("stop latency ...")
            ROWS.append(("stop latency: sms worker", pct(await stop_latency(catalog, ssh, sms_sleep, 10)), "goal p95 ≤ 1 s"))
            ROWS.append(("stop latency: process worker", pct(await stop_latency(catalog, ssh, proc_sleep, 5)), "baseline"))
        if "throughput" in only:
            print("throughput ...")
            processes = {
                "Prefect server": lambda: process_tree(server.pid),
                "sms worker": lambda: {sms.pid},
                "this client (creates the runs)": lambda: {os.getpid()},
                "PostgreSQL": lambda: process_tree(pg.pid),
                "sshd and the scripts": lambda: process_tree(ssh.pid),
            }
            rate, cpu = await throughput(catalog, sms_true, 200, processes)
            ROWS.append(("throughput, 200 short runs: sms worker", f"{rate:.1f} runs/s", "goal ≥ 20 runs/s"))
            for label, seconds in cpu.items():
                ROWS.append((f"  CPU per short run: {label}", f"{seconds * 1000:.0f} ms", "what limits throughput"))
            cores = os.cpu_count() or 1
            ROWS.append(("  throughput ceiling from that CPU", f"{cores / sum(cpu.values()):.1f} runs/s", f"{cores} cores ÷ CPU per run"))
            rate, _ = await throughput(catalog, proc_true, 20, {})
            ROWS.append(("throughput, 20 short runs: process worker", f"{rate:.1f} runs/s", "baseline"))
        if "memory" in only:
            print("memory ...")
            for count in counts:
                per_run = await memory(catalog, ssh, sms_sleepers, sms, count, tree=False)
                ROWS.append((f"memory per running script: sms worker, {count} runs", f"{per_run / 1024:.2f} MB", "goal ≤ 2 MB at 1,000"))
            per_run = await memory(catalog, ssh, proc_sleep, process, 5, tree=True)
            ROWS.append(("memory per running script: process worker, 5 runs", f"{per_run / 1024:.1f} MB", "baseline"))
    finally:
        sms.stop()
        process.stop()
        catalog.dispose()


def main() -> None:
    # Prefect replaces Python's SIGINT handling; make both signals unwind the peers' `with` blocks.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = sys.argv[1:]
    only = set(MEASURES)
    if args[:1] == ["--only"]:
        only = set(args[1].split(","))
        args = args[2:]
        if unknown := only - set(MEASURES):
            sys.exit(f"unknown measure(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    counts = [int(a) for a in args] or [100, 300]
    try:
        with SshServer(max_startups="1000:30:2000") as ssh, PostgreSQL() as pg:
            with talking_to(PrefectServer(database_url=pg.prefect_url).start()) as server:
                asyncio.run(bench(ssh, pg, server, counts, only))
    finally:
        table()


def table() -> None:
    """Prints what was measured (also when a later measure failed)."""
    if not ROWS:
        return
    width = max(len(r[0]) for r in ROWS)
    print(f"\n{'measure':<{width}} | result | note\n{'-' * width} | --- | ---")
    for measure, result, note in ROWS:
        print(f"{measure:<{width}} | {result} | {note}")


if __name__ == "__main__":
    main()
