"""Script output in a real Elasticsearch: every line shipped, in order, exactly once, readable
back (paged, live, searched), also when Elasticsearch was down while the script ran.

Runs go through the real run-script flow (in this process), the test bed's sshd and Prefect
server; the ``sms`` CLI runs as a real subprocess. Shipping is on for this module only
(``SMS_ELASTICSEARCH_URL`` points at the session's Elasticsearch), and ``sms log-shipper`` runs
beside the tests as it does beside ``sms up``: it delivers what a run could not deliver itself
within its bounded final attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import TransportError
from prefect.states import State

from flows.run_script import run_script
from infra.testbed.ports import free_port
from sms_plugin import AsyncSMSClient, hosts, runs
from sms_plugin.catalog import Catalog, ScriptSpec, add_script
from sms_plugin.errors import SMSError
from sms_plugin.settings import log_spool_dir
from sms_plugin.telemetry.logs import LogEntry, run_output, search
from sms_plugin.telemetry.logs.elastic import connect
from sms_plugin.transports.base import MAX_LINE_CHARS
from tests.integration.conftest import block_of, long_line_pieces
from tests.integration.test_transport_contract import LONG_LINE

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))


@pytest.fixture(scope="module", autouse=True)
def log_shipper(elasticsearch: Any, prefect_server: Any) -> Iterator[subprocess.Popen[str]]:
    """Shipping on (this module only) and the real ``sms log-shipper`` service running."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_ELASTICSEARCH_URL", elasticsearch.url)
        shipper = subprocess.Popen([SMS, "log-shipper"], env=os.environ, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            yield shipper
        finally:
            shipper.terminate()
            output, _ = shipper.communicate(timeout=30)
            print(f"\n--- sms log-shipper ---\n{output}")
        assert shipper.returncode == 0, output


@pytest.fixture
async def ssh_host(prefect_server: Any, ssh_server: Any) -> str:
    name = f"ssh-{uuid.uuid4().hex[:8]}"
    await hosts.add(name, block_of(ssh_server))
    return name


def _script(catalog: Catalog, host: str, content: str) -> str:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="bash", host=host), content=content, author="tests")
    return name


async def _run(name: str) -> str:
    state: State = await run_script(script=name, return_state=True)
    assert state.is_completed(), state.message
    return str(state.state_details.flow_run_id)


async def _all(run_id: str) -> list[LogEntry]:
    return [entry async for entry in run_output(run_id)]


def _spooled(run_id: str) -> list[Path]:
    return sorted(log_spool_dir().glob(f"{run_id}.*"))


async def _delivered(run_id: str, timeout: float = 180) -> None:
    """Wait until the run's spool files are gone: everything is acknowledged by Elasticsearch."""
    deadline = time.monotonic() + timeout
    while _spooled(run_id):
        assert time.monotonic() < deadline, f"still spooled after {timeout} s: {_spooled(run_id)}"
        await asyncio.sleep(0.5)


async def test_200_000_lines_of_one_run_are_all_searchable_in_order(catalog, ssh_host):
    count = 200_000
    name = _script(catalog, ssh_host, f'seq 1 {count} | sed "s/^/out /"\necho "the end" >&2\n')
    started = time.monotonic()
    run_id = await _run(name)
    ran = time.monotonic() - started
    await _delivered(run_id)
    print(f"\n200,000-line run: {ran:.1f} s, all delivered after {time.monotonic() - started:.1f} s")

    entries = await _all(run_id)
    assert [entry.line for entry in entries] == list(range(1, count + 2))  # line numbers: both streams
    # Each stream in its order (the transport reads stdout and stderr apart: they may interleave).
    stdout = [(e.message, e.level) for e in entries if e.stream == "stdout"]
    assert stdout == [(f"out {i}", "INFO") for i in range(1, count + 1)]
    assert [(e.message, e.level) for e in entries if e.stream == "stderr"] == [("the end", "WARNING")]
    assert {(e.script, e.version, e.host, e.run_id, e.attempt) for e in entries} == {(name, 1, ssh_host, run_id, 1)}

    # Prefect's run log has every line too (in messages of many lines).
    prefect_lines = [
        text
        async for line in _prefect_log(run_id)
        if line.message.startswith("out ")
        for text in line.message.split("\n")
    ]
    assert prefect_lines == [f"out {i}" for i in range(1, count + 1)]


async def _prefect_log(run_id: str):  # noqa: ANN202 - an async iterator of runs.LogLine
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SMS_ELASTICSEARCH_URL")
        async for line in runs.logs(run_id):
            yield line


async def test_lines_printed_while_elasticsearch_was_down_arrive_once_it_is_back(catalog, ssh_host, elasticsearch):
    count = 20_000
    name = _script(catalog, ssh_host, f'for i in $(seq 1 {count}); do echo "down $i"; done\necho "err" >&2\n')
    elasticsearch.halt()
    try:
        run_id = await _run(name)  # the run does not wait for Elasticsearch
        suffixes = {path.suffix for path in _spooled(run_id)}
        assert {".ndjson", ".done"} <= suffixes  # ended, nothing delivered: all lines wait on disk
    finally:
        await asyncio.to_thread(elasticsearch.resume)

    await _delivered(run_id)  # by `sms log-shipper`, now that Elasticsearch is back
    entries = await _all(run_id)
    assert [entry.line for entry in entries] == list(range(1, count + 2))
    assert [e.message for e in entries if e.stream == "stdout"] == [f"down {i}" for i in range(1, count + 1)]
    assert [e.message for e in entries if e.stream == "stderr"] == ["err"]
    client = connect()
    assert client.count(index="sms-logs-*", query={"term": {"sms.run_id": run_id}})["count"] == count + 1


def test_a_node_of_the_url_list_that_does_not_answer_is_passed_over(elasticsearch):
    """``SMS_ELASTICSEARCH_URL`` may list a cluster's nodes: a node that does not answer costs a
    failed request, then the client leaves it out for its back-off and sends to the others (as
    round robin without that would fail every other request). Drill 10 (docs/deploy.md) stops a
    node of a real cluster."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = connect(f"{dead}, {elasticsearch.url}")
    assert sorted(node.base_url for node in client.transport.node_pool.all()) == sorted([dead, elasticsearch.url])
    answers = []
    for _ in range(10):
        try:
            answers.append(client.cluster.health()["cluster_name"])
        except TransportError:
            answers.append("failed")
    assert answers.count("failed") <= 2 and answers.count("sms-testbed") >= 8, answers


async def test_follow_shows_lines_of_a_running_script_within_a_second(catalog, ssh_host):
    ticks = 60  # ~15 s: the follower (a new `sms` process) needs a few seconds to start
    name = _script(catalog, ssh_host, f'for i in $(seq 1 {ticks}); do echo "tick $i $(date +%s.%N)"; sleep 0.25; done\n')
    flow = asyncio.create_task(run_script(script=name, return_state=True))
    try:
        run_id = await _first_run_of(name)
        follower = subprocess.Popen([SMS, "logs", run_id, "--follow"], env=os.environ, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        received = _timestamped_lines(follower)
        state = await flow
    finally:
        flow.cancel()
    assert state.is_completed(), state.message
    follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read()

    seen = [(arrival, line.split()) for arrival, line in received()]
    assert [words[1] for _, words in seen] == [str(i) for i in range(1, ticks + 1)], seen
    # Lines printed before the follower's first read arrive together; after that, each one live.
    first_read = seen[0][0]
    delays = [arrival - float(words[2]) for arrival, words in seen if float(words[2]) > first_read]
    print(f"\n--follow delays: {', '.join(f'{d:.2f}' for d in delays)} s")
    assert len(delays) >= 5  # the follower started while the script still had lines to print
    # Within a second (measured 0.16-0.98 s at load 8 on 2 cores); a single line delayed by a
    # loaded machine may exceed it, so the bound is on 9 lines in 10.
    assert sorted(delays)[int(0.9 * len(delays)) - 1] < 1.0, delays


async def _first_run_of(script: str) -> str:
    """The run id of ``script``'s first run, from its first line in Elasticsearch."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(SMSError):  # 503 while a new daily index allocates its shard
            async for entry in search("", script=script, limit=1):
                return entry.run_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"no line of {script} reached Elasticsearch")


def _timestamped_lines(process: subprocess.Popen[str]):  # noqa: ANN202
    """Reads ``process``'s stdout in a thread; returns a function giving [(arrival time, line)]."""
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def collected() -> list[tuple[float, str]]:
        reader.join(timeout=30)
        return list(lines.queue)

    return collected


async def test_search_across_runs_by_words_script_and_time(catalog, ssh_host):
    token = f"tok{uuid.uuid4().hex[:8]}"
    first = _script(catalog, ssh_host, f'echo "{token} alpha from one"\necho "other line"\n')
    second = _script(catalog, ssh_host, f'echo "{token} beta from two" >&2\n')
    first_run, second_run = await _run(first), await _run(second)
    connect().indices.refresh(index="sms-logs-*")

    found = [(e.script, e.run_id, e.message) async for e in search(token, since="1h")]
    assert sorted(found) == sorted([(first, first_run, f"{token} alpha from one"),
                                    (second, second_run, f"{token} beta from two")])
    assert [e.message async for e in search(f"{token} beta")] == [f"{token} beta from two"]
    assert [e.run_id async for e in search(token, script=first)] == [first_run]

    sdk = AsyncSMSClient()
    assert [e.script async for e in sdk.search_logs(token, since="5m")] == [second, first]  # newest first
    assert [e.message async for e in sdk.output(first_run)] == [f"{token} alpha from one", "other line"]

    cli = subprocess.run([SMS, "logs", "search", token, "--script", second, "--since", "1h"], env=os.environ,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.count(token) == 1 and f"{second} {second_run} stderr:1 {token} beta from two" in cli.stdout

    bad = subprocess.run([SMS, "logs", "search", token, "--since", "yesterday"], env=os.environ,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: --since 'yesterday': use a number and a unit s, m, h, d or w (e.g. 1h)"


async def test_a_line_over_the_limit_reads_back_in_marked_pieces_from_elasticsearch(catalog, ssh_host):
    length = 2 * MAX_LINE_CHARS + 1000
    name = _script(catalog, ssh_host, LONG_LINE.format(length=length))
    run_id = await _run(name)
    await _delivered(run_id)
    assert len(long_line_pieces([entry.message for entry in await _all(run_id)], length)) == 3
    cli = subprocess.run([SMS, "logs", run_id], env=os.environ, capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == b"x" * length + b"\nafter\n"  # `sms logs` joins the pieces back
