"""Benchmark: what a person waits for at the ``sms`` command, this tree against a base commit.

In one run, side by side, the same venv's Python with the code of a base commit (``git archive``
into a temporary folder, first on PYTHONPATH) and with this tree's code, each ``sms`` started through
its own tree's entry point (``[project.scripts]``: the base's is not this tree's), each with a home,
catalog, work pool and ``sms`` worker of its own, on one private Prefect server and the test bed's sshd:

- ``sms --help``;
- ``sms script list``;
- ``sms run NAME --wait`` of a one-line script (``echo hi``) on the sshd, command start to exit;
- ``sms stop RUN`` of a running ``sleep``: when the command returns, when the remote process is
  gone (``ps`` on the server every 20 ms) and when Prefect reads the run Cancelled (polled every
  20 ms); this tree's ``sms stop --wait`` as well.

Prints min / median / max wall seconds of each (a plain timing loop: the commands change state).

Run from the repository root:
    .venv/bin/python bench/person_waits.py [--runs 5] [--base d5e8f79]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.testbed.prefect_server import PrefectServer  # noqa: E402
from infra.testbed.prefect_worker import PrefectWorker  # noqa: E402
from infra.testbed.sshd import SshServer  # noqa: E402



def command(code: Path, folder: Path) -> str:
    """An ``sms`` command running ``code``'s own entry point, written as pip writes a console script."""
    module, function = tomllib.loads((code / "pyproject.toml").read_text())["project"]["scripts"]["sms"].split(":")
    script = folder / "sms"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    script.chmod(0o755)
    return str(script)


class Tree:
    """One version of the code: its environment, its host and scripts, its worker."""

    def __init__(self, label: str, code: Path, work: Path, api_url: str) -> None:
        self.label = label
        home = work / f"home-{label}"
        home.mkdir(parents=True)
        self.command = command(code, home)
        self.pool = f"bench-{label}-{uuid.uuid4().hex[:4]}"
        self.env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "NO_COLOR": "1", "TERM": "dumb",
                    "HOME": str(home), "SMS_HOME": str(home / ".sms"), "PYTHONPATH": str(code),
                    "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home / "prefect"), "SMS_WORK_POOL": self.pool}
        self.host = f"ssh-{label}"
        self.worker: PrefectWorker | None = None

    def sms(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.command, *args], env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=600)
        if check and done.returncode != 0:
            raise RuntimeError(f"[{self.label}] sms {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def timed(self, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        began = time.perf_counter()
        done = self.sms(*args)
        return time.perf_counter() - began, done

    def prepare(self, sshd: SshServer, work: Path, api_url: str) -> None:
        key = work / f"key-{self.label}"
        key.write_text(sshd.private_key_pem)
        key.chmod(0o600)
        self.sms("host", "add", self.host, "--ssh", sshd.host, "-p", str(sshd.port), "-u", sshd.username, "-i", str(key))
        self.sms("host", "trust", self.host, "--yes")
        source = work / f"hi-{self.label}.sh"
        source.write_text("echo hi\n")
        self.sms("script", "add", f"hi-{self.label}", "-t", "sh", "-h", self.host, "-f", str(source))
        extra = {k: v for k, v in self.env.items() if k in ("HOME", "SMS_HOME", "PYTHONPATH", "SMS_WORK_POOL")}
        self.worker = PrefectWorker(api_url, pool=self.pool, worker_type="sms", extra_env=extra, timeout=600)
        self.worker.start()

    def nap_script(self, work: Path, marker: str) -> str:
        name = f"nap-{self.label}-{marker}"
        source = work / f"{name}.sh"
        source.write_text(f"sleep {marker}\n")
        self.sms("script", "add", name, "-t", "sh", "-h", self.host, "-f", str(source))
        return name


def stop_once(tree: Tree, sshd: SshServer, api_url: str, work: Path, *, wait: bool) -> tuple[float, float, float]:
    """Seconds from typing ``sms stop`` to: the command's return, the remote process gone, Cancelled."""
    marker = str(uuid.uuid4().int % 10**6 + 4 * 10**6)
    name = tree.nap_script(work, marker)
    run_id = tree.sms("run", name).stdout.split()[1]
    deadline = time.monotonic() + 120
    while not [p for p in sshd.processes(f"sleep {marker}") if " Z" not in p]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"[{tree.label}] {name} never started")
        time.sleep(0.05)
    began = time.perf_counter()
    stopping = subprocess.Popen([tree.command, "stop", run_id, *(["--wait"] if wait else [])], env=tree.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    returned = gone = cancelled = None
    with httpx.Client(base_url=api_url, timeout=10) as client:
        while None in (returned, gone, cancelled):
            now = time.perf_counter() - began
            if returned is None and stopping.poll() is not None:
                returned = now
            if gone is None and not [p for p in sshd.processes(f"sleep {marker}") if " Z" not in p]:
                gone = now
            if cancelled is None and client.get(f"/flow_runs/{run_id}").json()["state"]["type"] == "CANCELLED":
                cancelled = now
            if now > 120:
                raise RuntimeError(f"[{tree.label}] stop of {run_id}: returned {returned}, gone {gone}, cancelled {cancelled}")
            time.sleep(0.02)
    if stopping.wait() != 0:
        raise RuntimeError(f"[{tree.label}] sms stop {run_id}: {stopping.stderr.read()}")
    return returned, gone, cancelled


def row(name: str, values: list[float]) -> str:
    return f"{name:<44} {min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", default="d5e8f79", help="The commit to compare with (before).")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sms-bench-waits-"))
    results: dict[str, list[float]] = {}
    trees: list[Tree] = []
    try:
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", options.base], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        os.chdir(work)  # Prefect puts the working folder first on a worker's path: it must hold neither tree
        with PrefectServer(timeout=900) as server, SshServer() as sshd:  # patient: a busy machine starts it slowly
            trees = [Tree("before", before, work, server.api_url), Tree("after", ROOT, work, server.api_url)]
            for tree in trees:
                tree.prepare(sshd, work, server.api_url)
                tree.sms("run", f"hi-{tree.label}", "--wait")  # warm-up: the worker has loaded the flow
            for done in range(1, options.runs + 1):
                for tree in trees:
                    for name, args in (("sms --help", ["--help"]), ("sms script list", ["script", "list"]),
                                       ("sms run --wait (echo hi)", ["run", f"hi-{tree.label}", "--wait"])):
                        results.setdefault(f"{name} [{tree.label}]", []).append(tree.timed(*args)[0])
                    stops = [("sms stop", False)] + ([("sms stop --wait", True)] if tree.label == "after" else [])
                    for name, wait in stops:
                        returned, gone, cancelled = stop_once(tree, sshd, server.api_url, work, wait=wait)
                        results.setdefault(f"{name}: returns [{tree.label}]", []).append(returned)
                        results.setdefault(f"{name}: processes gone [{tree.label}]", []).append(gone)
                        results.setdefault(f"{name}: Cancelled [{tree.label}]", []).append(cancelled)
                report(results, done, options.base)  # after every run: a run cut short still has its figures
    finally:
        for tree in trees:
            if tree.worker is not None:
                tree.worker.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, list[float]], runs: int, base: str) -> None:
    print(f"what a person waits for, wall seconds over {runs} run(s); before = {base}, after = this tree; "
          f"sms worker, test bed sshd; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'measure':<44} {'min':>7} {'median':>7} {'max':>7}")
    for name in sorted(results, key=lambda n: (n.split(" [")[0], n.endswith("[after]"))):
        print(row(name, results[name]))
    print(flush=True)


if __name__ == "__main__":
    main()
