"""Benchmark: the SMS SSH transport against raw paramiko, side by side, on a private sshd.

Measures, over N runs each (default 50):
- start → first output line: SMS (launcher: own process group, state file, run marker, pooled
  connection) vs raw paramiko ``exec_command`` on an open connection (the floor);
- stop → every process gone: SMS ``kill`` (group + marker, zombie-aware probe) for a script with a
  backgrounded and a daemonised child, vs raw ``kill -TERM -<pgid>`` over the same connection
  (which leaves the daemonised child running: the baseline is faster and wrong).

Run as root from the repository root (it starts the test bed's sshd on loopback):
    .venv/bin/python bench/ssh_transport.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paramiko  # noqa: E402

from infra.testbed.sshd import SshServer  # noqa: E402
from sms_plugin.transports.base import Plan  # noqa: E402
from sms_plugin.transports.ssh import ConnectionPool, SSHTarget, SSHTransport, _connect  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def raw_first_line(client: paramiko.SSHClient) -> float:
    started = time.perf_counter()
    _, stdout, _ = client.exec_command("echo ready; sleep 0")
    stdout.readline()
    elapsed = time.perf_counter() - started
    stdout.channel.recv_exit_status()
    return elapsed


def alive(client: paramiko.SSHClient, marker: str) -> int:
    _, stdout, _ = client.exec_command(f"ps -eo stat=,args= | grep -v grep | grep -c '^[^Z].*sleep {marker}'")
    return int(stdout.read().decode().strip() or 0)


def raw_stop(client: paramiko.SSHClient, marker: str) -> tuple[float, int]:
    _, stdout, _ = client.exec_command(
        f"setsid sh -c 'echo $$; sleep {marker} & setsid sleep {marker} & sleep {marker}' </dev/null"
    )
    pgid = int(stdout.readline())
    started = time.perf_counter()
    client.exec_command(f"kill -TERM -{pgid}")[1].channel.recv_exit_status()
    while alive(client, marker) > 1:  # the daemonised child survives a plain group kill
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    left = alive(client, marker)
    client.exec_command(f"pkill -f 'sleep {marker}'")[1].channel.recv_exit_status()
    return elapsed, left


async def sms_first_line(transport: SSHTransport) -> float:
    started = time.perf_counter()
    process = await transport.launch(Plan(program=("sh", "-c", "echo ready"), run_id=str(uuid.uuid4())))
    await anext(process.lines())
    elapsed = time.perf_counter() - started
    async for _ in process.lines():
        pass
    await process.wait()
    return elapsed


async def sms_stop(transport: SSHTransport, client: paramiko.SSHClient, marker: str) -> tuple[float, int]:
    script = f"sleep {marker} & setsid sleep {marker} & echo ready; sleep {marker}"
    process = await transport.launch(Plan(program=("sh", "-c", script), run_id=str(uuid.uuid4())))
    await anext(process.lines())
    while alive(client, marker) < 3:
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    await process.stop(grace_seconds=5)
    elapsed = time.perf_counter() - started
    await process.wait()
    return elapsed, alive(client, marker)


async def main(runs: int) -> None:
    with SshServer() as server:
        target = SSHTarget(address=server.host, port=server.port, username=server.username,
                           private_key=server.private_key_pem, host_keys=list(server.host_public_keys))
        client = _connect(target)
        transport = await SSHTransport.connect(target, pool=ConnectionPool())
        try:
            raw_start = [raw_first_line(client) for _ in range(runs)]
            sms_start = [await sms_first_line(transport) for _ in range(runs)]
            raw_stops = [raw_stop(client, str(7_000_000 + n)) for n in range(runs)]
            sms_stops = [await sms_stop(transport, client, str(8_000_000 + n)) for n in range(runs)]
        finally:
            await transport.close()
            client.close()
    rows = [
        ("start → first line, raw paramiko exec (baseline)", raw_start, "-"),
        ("start → first line, SMS launcher", sms_start, "-"),
        ("stop → gone, raw kill -TERM -pgid (baseline)", [s for s, _ in raw_stops],
         f"{sum(left for _, left in raw_stops)} processes survived"),
        ("stop → gone, SMS kill (group + marker)", [s for s, _ in sms_stops],
         f"{sum(left for _, left in sms_stops)} processes survived"),
    ]
    print(f"SSH transport on loopback, {runs} runs each (seconds)")
    print(f"{'measure':<52} {'p50':>8} {'p95':>8}  left behind")
    for label, samples, note in rows:
        p50, p95 = percentiles(samples)
        print(f"{label:<52} {p50:8.4f} {p95:8.4f}  {note}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
