"""Benchmark: the ``sms`` command's start-up, before and after (the CLI loading only what a verb needs;
``sms --help`` printing its help rendered in advance).

In one run, side by side, the same venv's ``sms`` with the code of a base commit (``git archive``
into a temporary folder, put first on PYTHONPATH) and with this tree's code:

- ``sms --help``;
- ``sms script list`` on the embedded SQLite catalog of a temporary home (created by a warm-up run,
  then given ``--scripts`` scripts, 50 by default, half of them scheduled);
- ``sms stop RUN`` of an unknown run against a private Prefect server: its error path
  ("no run ..."), exit status 1.

Each tree's ``sms`` entry point is started the way the installed command starts it (the tree's
``sms_plugin.cli.entry`` when it has one, else ``sms_plugin.cli.app``). Timed with hyperfine (Debian
package ``hyperfine``); without it, with a plain loop of ``subprocess.run`` (said so in the output).
Prints min / median / max wall seconds per command, the CPU seconds (user + system, mean) where
hyperfine measured them, and the load average before and after: the machine may be shared.

Run from the repository root:
    .venv/bin/python bench/cli_startup.py [--runs 10] [--base 7d965a6] [--scripts 50] [--no-prefect]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.testbed.prefect_server import PrefectServer  # noqa: E402

LAUNCHER = """import sys
from importlib.util import find_spec
sys.argv[0] = "sms"
entry = "sms_plugin.cli.entry" if find_spec("sms_plugin.cli.entry") else "sms_plugin.cli.app"
sys.exit(__import__(entry, fromlist=["main"]).main())
"""
"""Starts a tree's ``sms`` as its console script would (the script's own entry point)."""
SEED = """import sys
from sms_plugin.catalog import Catalog, ScriptSpec, add_script
catalog = Catalog()
with catalog.session() as session:
    for i in range(int(sys.argv[1])):
        spec = ScriptSpec(name=f"job-{i:03d}", interpreter="bash", host="web-1", tags=["nightly", "ops"],
                          schedules=[{"cron": "0 3 * * *"}] if i % 2 else [])
        add_script(session, spec, content=f"echo {i}", author="bench")
catalog.dispose()
"""
"""Adds ``argv[1]`` scripts to a tree's catalog with that tree's own code."""
UNKNOWN_RUN = str(uuid.uuid4())
COMMANDS = {
    "sms --help": ["--help"],
    "sms script list": ["script", "list"],
    "sms stop (unknown run)": ["stop", UNKNOWN_RUN],
}


def tree_env(code: Path, home: Path, api_url: str) -> dict[str, str]:
    """The environment of one tree's ``sms``: its code first on PYTHONPATH, a home of its own."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb",
            "HOME": str(home), "SMS_HOME": str(home / ".sms"), "PYTHONPATH": str(code), "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home / "prefect")}


def with_env(env: dict[str, str], launcher: Path, args: list[str]) -> list[str]:
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, str(launcher), *args]


def hyperfine(commands: dict[str, list[str]], runs: int, report: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of each run of each command, and its mean CPU seconds, timed by hyperfine (no shell,
    failures allowed)."""
    argv = ["hyperfine", "--shell=none", "--ignore-failure", "--warmup", "1", "--runs", str(runs),
            "--export-json", str(report), "--style", "basic"]
    for name, command in commands.items():
        argv += ["--command-name", name, " ".join(command)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(report.read_text())["results"]
    return {r["command"]: r["times"] for r in results}, {r["command"]: r["user"] + r["system"] for r in results}


def loop(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """The same with a plain timing loop (one warm-up run each)."""
    times: dict[str, list[float]] = {}
    for name, command in commands.items():
        subprocess.run(command, capture_output=True)
        times[name] = []
        for _ in range(runs):
            began = time.perf_counter()
            subprocess.run(command, capture_output=True)
            times[name].append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--base", default="7d965a6", help="The commit to compare with (before).")
    parser.add_argument("--scripts", type=int, default=50, help="Scripts in each catalog `sms script list` lists.")
    parser.add_argument("--no-prefect", action="store_true",
                        help="Skip the `sms stop` rows and the Prefect server they need (a loaded machine).")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sms-bench-cli-"))
    launcher = work / "launch_sms.py"
    launcher.write_text(LAUNCHER)
    load_before = os.getloadavg()
    cpu: dict[str, float] = {}
    try:
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", options.base], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        with contextlib.nullcontext() if options.no_prefect else PrefectServer() as server:
            api_url = server.api_url if server else "http://127.0.0.1:9/api"  # unused without the stop rows
            envs = {"before": tree_env(before, work / "home-before", api_url),
                    "after": tree_env(ROOT, work / "home-after", api_url)}
            commands = {f"{name} [{tree}]": with_env(env, launcher, args)
                        for name, args in COMMANDS.items() for tree, env in envs.items()
                        if not (options.no_prefect and args[0] == "stop")}
            seed = work / "seed.py"
            seed.write_text(SEED)
            for tree, env in envs.items():  # the catalogs exist, are migrated and hold the scripts before timing
                subprocess.run(with_env(env, launcher, ["script", "list"]), check=True, capture_output=True)
                subprocess.run(with_env(env, seed, [str(options.scripts)]), check=True, capture_output=True)
            if shutil.which("hyperfine"):
                timer = "hyperfine"
                times, cpu = hyperfine(commands, options.runs, work / "hyperfine.json")
            else:
                timer = "a plain subprocess timing loop (hyperfine is not installed)"
                times = loop(commands, options.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"sms start-up, wall seconds over {options.runs} runs, timed with {timer}; "
          f"before = {options.base}, after = this tree; {options.scripts} scripts listed; {os.cpu_count()} CPUs; load average (1/5/15 min) "
          f"{'/'.join(f'{x:.1f}' for x in load_before)} before, {'/'.join(f'{x:.1f}' for x in load_after)} after")
    print(f"{'command':<34} {'min':>7} {'median':>7} {'max':>7} {'CPU s':>7}")
    for name, values in times.items():
        used = f"{cpu[name]:7.3f}" if name in cpu else f"{'-':>7}"
        print(f"{name:<34} {min(values):7.3f} {statistics.median(values):7.3f} {max(values):7.3f} {used}")


if __name__ == "__main__":
    main()
