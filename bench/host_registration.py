"""Benchmark: registering many SSH hosts, one ``hosts.add`` each (the baseline) against ``hosts.add_many``.

On a private Prefect server (PostgreSQL) of the test bed, in one run:
- ``hosts.add`` one by one, 16 at a time (what the fleet test bed did before ``add_many``), on
  ``--baseline`` new hosts;
- ``hosts.add_many`` on each of ``--hosts`` new hosts (the block documents and the ``host:<name>``
  limits created), then the same hosts again with ``overwrite`` (every document updated, the
  limits only read).
Prints hosts registered per second and the Prefect server's and PostgreSQL's CPU seconds for each.

Run from the repository root:
    .venv/bin/python bench/host_registration.py                      # baseline 200, bulk 200 and 1000
    .venv/bin/python bench/host_registration.py --baseline 50 --hosts 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-hostreg-"))
os.environ.update(PREFECT_HOME=str(_TMP / "prefect-home"), SMS_HOME=str(_TMP / "sms-home"))
os.environ.pop("PREFECT_API_URL", None)

from pydantic import SecretStr  # noqa: E402

from infra.testbed.process import cpu_seconds, process_tree  # noqa: E402
from sms_plugin.host_kinds import SSHHost  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ONE_BY_ONE_AT_ONCE = 16


def blocks(prefix: str, count: int) -> dict[str, SSHHost]:
    """``count`` SSH host blocks named ``PREFIX-0001`` ... (nothing listens at their address)."""
    return {
        f"{prefix}-{number:04d}": SSHHost(
            address="192.0.2.10", port=22, username="ops", private_key=SecretStr("not a key"),
            host_keys=[KEY], labels=["bench", f"n={number}"], max_parallel_sessions=10,
        )
        for number in range(1, count + 1)
    }


async def one_by_one(hosts: dict[str, SSHHost]) -> None:
    from sms_plugin import hosts as host_services

    turns = asyncio.Semaphore(ONE_BY_ONE_AT_ONCE)

    async def add(name: str, block: SSHHost) -> None:
        async with turns:
            await host_services.add(name, block)

    await asyncio.gather(*(add(name, block) for name, block in hosts.items()))


async def in_bulk(hosts: dict[str, SSHHost], overwrite: bool = False) -> None:
    from sms_plugin import hosts as host_services

    if refused := await host_services.add_many(hosts, overwrite=overwrite):
        raise host_services.refusals(refused)


async def measure(label: str, count: int, register: Callable[[], Awaitable[None]], server_pids: set[int]) -> None:
    def server_cpu() -> float:
        return cpu_seconds(set().union(*(process_tree(pid) for pid in server_pids)))

    cpu_before, began = server_cpu(), time.monotonic()
    await register()
    seconds = time.monotonic() - began
    print(f"| {label} | {count} | {seconds:.1f} | {count / seconds:.1f} | {server_cpu() - cpu_before:.1f} |", flush=True)


async def main(baseline: int, sizes: list[int]) -> None:
    from infra.testbed.postgresql import PostgreSQL
    from infra.testbed.prefect_server import PrefectServer
    from tests.conftest import talking_to

    with PostgreSQL() as pg, talking_to(PrefectServer(database_url=pg.prefect_url).start()) as server:
        pids = {server.pid, pg.pid}
        print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("| path | hosts | seconds | hosts registered/s | Prefect server + PostgreSQL CPU s |")
        print("| --- | --- | --- | --- | --- |")
        await measure("warm-up: hosts.add, 1 host", 1, lambda: one_by_one(blocks("warm", 1)), pids)
        if baseline:
            hosts = blocks("one", baseline)
            await measure(f"hosts.add one by one, {ONE_BY_ONE_AT_ONCE} at a time (baseline)", baseline,
                          lambda: one_by_one(hosts), pids)
        for size in sizes:
            hosts = blocks(f"bulk{size}", size)
            await measure("hosts.add_many, new hosts", size, lambda: in_bulk(hosts), pids)
            await measure("hosts.add_many, the same hosts again (overwrite)", size,
                          lambda: in_bulk(hosts, overwrite=True), pids)
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=int, default=200, help="hosts of the one-by-one baseline (0: none)")
    parser.add_argument("--hosts", default="200,1000", help="sizes of the bulk registrations")
    options = parser.parse_args()
    asyncio.run(main(options.baseline, [int(size) for size in options.hosts.split(",") if size]))
