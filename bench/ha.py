"""Benchmark: the cost of availability, the HA topology against the single-server setup.

Both setups run on this machine, one after the other, against the same private sshd:
- **single**: one Prefect server (API and services in one process) on PostgreSQL, the catalog on
  one MariaDB, one ``sms`` worker;
- **ha**: ``infra.ha.topology.HATopology`` without gateways: two Prefect API processes and one
  services process on PostgreSQL with Redis messaging, the catalog on three Galera nodes, HAProxy in
  front of both, two ``sms`` workers.

For each it measures, from this process (which creates the runs as the CLI does):
- **start latency**, request → the script's first instruction on the host (it writes a timestamp),
  p50 and p95 over ``--latency`` runs started one after the other;
- **throughput**: a burst of ``--burst`` runs of ``true`` (16 requests at a time), runs/s from the
  first request until every run is terminal;
- **CPU per run** of that burst, per part (each part's process tree, with its children that ended),
  and the whole.

Run as root from the repository root:
    .venv/bin/python bench/ha.py [--latency 20] [--burst 100] [--only single,ha]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-ha-"))
os.environ.update(PREFECT_HOME=str(_TMP / "prefect-home"), SMS_HOME=str(_TMP / "sms-home"))
os.environ.pop("PREFECT_API_URL", None)

from prefect import get_client  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402

from infra.ha.topology import HATopology  # noqa: E402
from infra.testbed.mariadb import MariaDB  # noqa: E402
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

STAMPS = Path("/tmp") / f"sms-bench-ha-stamps-{uuid.uuid4().hex[:8]}"
POOL = "bench-ha"
RESULTS: dict[str, dict[str, str]] = {}

Parts = dict[str, Callable[[], set[int]]]
"""Label → the pids of that part now."""


def trees(*roots: int | None) -> Callable[[], set[int]]:
    """The process trees of ``roots`` (None ignored), read when called."""
    return lambda: set().union(*(process_tree(root) for root in roots if root))


async def add_script(catalog: Catalog, host: str, content: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    await scripts.add(catalog, ScriptSpec(name=name, interpreter="sh", host=host), content, author="bench")
    return name


async def burst(catalog: Catalog, name: str, count: int, parts: Parts) -> tuple[float, dict[str, float]]:
    """Runs/s of ``count`` runs started 16 at a time, and each part's CPU seconds per run."""
    before = {label: cpu_seconds(pids()) for label, pids in parts.items()}
    gate = asyncio.Semaphore(16)

    async def one() -> str:
        async with gate:
            return await runs.start(catalog, name, trigger="cli", user="bench")

    began = time.monotonic()
    ids = list(await asyncio.gather(*(one() for _ in range(count))))
    if not await until(lambda: all_final(ids), 900, 0.5):
        raise RuntimeError(f"the burst's {count} runs did not all end within 900 s")
    rate = count / (time.monotonic() - began)
    return rate, {label: (cpu_seconds(pids()) - before[label]) / count for label, pids in parts.items()}


async def measure(setup: str, ssh: SshServer, catalog: Catalog, parts: Parts, latency: int, burst_size: int) -> None:
    """Registers the host and two scripts on the setup in use, then measures it."""
    host = f"bench-{uuid.uuid4().hex[:4]}"
    await hosts.add(host, block_of(ssh, max_parallel_sessions=burst_size + 10))
    stamp_first = await add_script(catalog, host, STAMP_FIRST)
    short = await add_script(catalog, host, "true\n")
    await start_latency(catalog, stamp_first, 2, STAMPS)  # the first runs pay one-time costs (imports, pools)
    p50, p95 = percentiles(await start_latency(catalog, stamp_first, latency, STAMPS))
    print(f"{setup}: start latency p50 {p50:.3f} s, p95 {p95:.3f} s", flush=True)
    rate, cpu = await burst(catalog, short, burst_size, parts)
    print(f"{setup}: {rate:.2f} runs/s, CPU per run {sum(cpu.values()) * 1000:.0f} ms", flush=True)
    result = RESULTS.setdefault(setup, {})
    result["start latency p50"] = f"{p50:.3f} s"
    result["start latency p95"] = f"{p95:.3f} s"
    result[f"throughput, {burst_size} short runs"] = f"{rate:.2f} runs/s"
    result["CPU per run, all parts"] = f"{sum(cpu.values()) * 1000:.0f} ms"
    for label, seconds in cpu.items():
        result[f"  CPU per run: {label}"] = f"{seconds * 1000:.0f} ms"


@contextmanager
def single_setup(ssh: SshServer) -> Iterator[tuple[Catalog, Parts]]:
    """One Prefect server on PostgreSQL, the catalog on one MariaDB, one sms worker."""
    with PostgreSQL() as pg, MariaDB("sms_bench") as mariadb:
        os.environ["SMS_DATABASE_URL"] = mariadb.url
        os.environ["SMS_WORK_POOL"] = POOL
        catalog = Catalog(mariadb.url)
        catalog.upgrade()
        with talking_to(PrefectServer(database_url=pg.prefect_url).start()) as server:
            asyncio.run(_create_pool())
            env = {"SMS_HOME": os.environ["SMS_HOME"], "SMS_DATABASE_URL": mariadb.url}
            worker = PrefectWorker(server.api_url, pool=POOL, worker_type="sms", limit=200, extra_env=env).start()
            parts: Parts = {
                "Prefect (API and services)": trees(server.pid),
                "PostgreSQL": trees(pg.pid),
                "catalog (MariaDB)": trees(mariadb.pid),
                "sms worker": trees(worker.pid),
                "this client": lambda: {os.getpid()},
                "sshd and the scripts": trees(ssh.pid),
            }
            try:
                yield catalog, parts
            finally:
                worker.stop()
                catalog.dispose()


async def _create_pool() -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=POOL, type="sms"))


@contextmanager
def ha_setup(ssh: SshServer) -> Iterator[tuple[Catalog, Parts]]:
    """``HATopology`` without gateways; this process talks to it through its HAProxy."""
    with HATopology(pool=POOL, worker_env={"SMS_HOME": os.environ["SMS_HOME"]}) as ha:
        os.environ.update(ha.client_env())
        catalog = Catalog(ha.catalog_url)
        assert ha.services is not None
        parts: Parts = {
            "Prefect (API and services)": trees(*(api.pid for api in ha.apis), ha.services.pid),
            "PostgreSQL": trees(ha.postgresql.pid),
            "Redis": trees(ha.redis.pid),
            "catalog (Galera)": trees(*(node.pid for node in ha.galera.nodes)),
            "HAProxy": trees(*(proxy.pid for proxy in (ha.haproxy, ha.catalog_proxy) if proxy)),
            "sms workers": trees(*(worker.pid for worker in ha.workers)),
            "this client": lambda: {os.getpid()},
            "sshd and the scripts": trees(ssh.pid),
        }
        try:
            with talking_to(ha, auth_string=ha.auth_string):
                yield catalog, parts
        finally:
            catalog.dispose()


SETUPS = {"single": single_setup, "ha": ha_setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=20, help="runs for start latency (default 20)")
    parser.add_argument("--burst", type=int, default=100, help="short runs for throughput and CPU (default 100)")
    parser.add_argument("--only", default="single,ha", help="setups, comma-separated (default single,ha)")
    args = parser.parse_args()
    chosen = args.only.split(",")
    if unknown := set(chosen) - set(SETUPS):
        sys.exit(f"unknown setup(s) {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    # Prefect replaces Python's SIGINT handling; make both signals unwind the peers' `with` blocks.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    STAMPS.mkdir(mode=0o777)
    STAMPS.chmod(0o777)
    try:
        with SshServer(max_startups="1000:30:2000") as ssh:
            for setup in chosen:
                print(f"{setup}: starting ...", flush=True)
                began = time.monotonic()
                with SETUPS[setup](ssh) as (catalog, parts):
                    print(f"{setup}: started in {time.monotonic() - began:.0f} s", flush=True)
                    asyncio.run(measure(setup, ssh, catalog, parts, args.latency, args.burst))
    finally:
        table(chosen)


def table(chosen: list[str]) -> None:
    """Prints what was measured, the setups side by side (also when a later one failed)."""
    measures = list(dict.fromkeys(m for setup in chosen for m in RESULTS.get(setup, {})))
    if not measures:
        return
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"\n| measure | {' | '.join(chosen)} |\n| --- |{' --- |' * len(chosen)}")
    for measure_name in measures:
        cells = [RESULTS.get(setup, {}).get(measure_name, "—") for setup in chosen]
        print(f"| {measure_name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
