"""Benchmark: script output → searchable in Elasticsearch, against raw ``ssh host cat FILE``.

For each size (default 100k, 500k, 1M lines) one file of that many lines is written on the test
bed's sshd host, then, in the same run:

- **raw**: the ``ssh`` client runs ``cat FILE`` and its output is read to the end (the floor: the
  same bytes over the same sshd, no parsing, no storage);
- **SMS**: the SMS SSH transport runs ``cat FILE`` through ``execute()``; its output goes, as in
  the run-script flow, through a logger to the spool handler and the flow's live delivery; the
  clock stops when Elasticsearch counts every line (after a refresh).

It reports lines/s for both, SMS as a share of raw, and this process's RSS after each size
(memory must stay flat as the output grows). Prefect's API log handler is not in the path (it
receives the same records in batches of up to 256 KB; see docs/logs.md for its limits).

Run as root from the repository root (starts the test bed's sshd and Elasticsearch):
    .venv/bin/python bench/log_shipping.py [LINES ...]
    .venv/bin/python bench/log_shipping.py --profile 200000    # pyinstrument profile of SMS
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.testbed.elasticsearch import Elasticsearch  # noqa: E402
from infra.testbed.sshd import SshServer  # noqa: E402
from sms_plugin.execution import ScriptRun, execute  # noqa: E402
from sms_plugin.settings import log_spool_dir  # noqa: E402
from sms_plugin.telemetry.logs import OUTPUT, OutputSource, shipping  # noqa: E402
from sms_plugin.telemetry.logs.delivery import Deliverer  # noqa: E402
from sms_plugin.telemetry.logs.elastic import connect  # noqa: E402
from sms_plugin.transports.ssh import SSHTarget, SSHTransport  # noqa: E402

LINE = "2026-11-28T04:00:00 INFO worker-7 processed item {} of the nightly batch in 12 ms"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ssh_argv(server: SshServer, key: Path, command: str) -> list[str]:
    return ["ssh", "-i", str(key), "-p", str(server.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{server.username}@{server.host}", command]


def raw_cat(server: SshServer, key: Path, path: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(ssh_argv(server, key, f"cat {path}"), stdout=subprocess.PIPE, check=True)
    elapsed = time.perf_counter() - started
    assert done.stdout.count(b"\n") > 0
    return elapsed


async def sms_cat(target: SSHTarget, path: str, lines: int) -> float:
    source = OutputSource(run_id=str(uuid.uuid4()), attempt=1, script="bench", version=1, host="bench-host")
    logger = logging.getLogger("bench.flow")
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def started(_: int | None) -> None:
        pass

    async def output(stream: str, message: str) -> None:
        logger.log(logging.INFO, message, extra={OUTPUT: (source, stream)})

    client = connect()
    began = time.perf_counter()
    async with await SSHTransport.connect(target) as transport:
        async with shipping(source, logger):
            result = await execute(transport, ScriptRun(interpreter="sh", content=f"cat {path}\n"),
                                   on_started=started, on_output=output)
    assert result.exit_code == 0
    shipper = Deliverer(client, log_spool_dir())
    while True:  # what the run's bounded final attempt left, delivered as `sms log-shipper` does
        shipper.deliver()
        client.indices.refresh(index="sms-logs-*")
        if client.count(index="sms-logs-*", query={"term": {"sms.run_id": source.run_id}})["count"] >= lines:
            return time.perf_counter() - began
        await asyncio.sleep(0.2)


async def main(sizes: list[int], profile: bool) -> None:
    home = Path(tempfile.mkdtemp(prefix="sms-bench-home-"))
    os.environ["SMS_HOME"] = str(home)
    with SshServer() as server, Elasticsearch() as es:
        os.environ["SMS_ELASTICSEARCH_URL"] = es.url
        key = home / "id"
        key.write_text(server.private_key_pem)
        key.chmod(0o600)
        target = SSHTarget(address=server.host, port=server.port, username=server.username,
                           private_key=server.private_key_pem, host_keys=list(server.host_public_keys))
        print(f"Elasticsearch {es.url} ready in {es.startup_seconds:.0f} s; RSS at start {rss_mb():.0f} MB", flush=True)
        print("| lines | MB | raw ssh cat lines/s | SMS → searchable lines/s | SMS / raw | RSS after (MB) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for lines in sizes:
            path = f"/tmp/sms-bench-{uuid.uuid4().hex[:8]}.log"
            with open(path, "w") as out:
                out.writelines(LINE.format(i) + "\n" for i in range(lines))
            os.chmod(path, 0o644)
            size_mb = os.path.getsize(path) / 1e6
            raw = raw_cat(server, key, path)
            if profile:
                from pyinstrument import Profiler

                profiler = Profiler()
                profiler.start()
            sms = await sms_cat(target, path, lines)
            if profile:
                profiler.stop()
                print(profiler.output_text(show_all=False))
            os.unlink(path)
            print(f"| {lines:,} | {size_mb:.0f} | {lines / raw:,.0f} | {lines / sms:,.0f} | "
                  f"{raw / sms:.0%} | {rss_mb():.0f} |", flush=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    profiling = "--profile" in arguments
    counts = [int(a) for a in arguments if a != "--profile"] or [100_000, 500_000, 1_000_000]
    asyncio.run(main(counts, profiling))
