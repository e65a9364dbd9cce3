"""No secret leaks: a run on a real sshd host whose block holds a known password and private key,
with a secret script parameter of known value, then every place a secret could end up is searched for them — Prefect's logs, the run and
the block as Prefect's API shows them, every table of the catalog (the audit trail included),
Elasticsearch's documents, the command lines of every process while the run ran, and the reprs of
the objects involved. Zero hits."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.states import State
from sqlalchemy import MetaData, select

from blocks.hosts import SSHHost
from flows.run_script import run_script
from sms_plugin import hosts
from sms_plugin.catalog import Catalog, ScriptSpec, add_script, list_audit
from tests.integration.conftest import block_of
from tests.integration.test_logs_elasticsearch import _delivered

pytestmark = pytest.mark.integration


TOKEN = f"tk-{uuid.uuid4().hex}"


def _needles(ssh_server: Any) -> dict[str, str]:
    """What must never appear: the password, every line of the private key's body (so that a key
    printed in part, or JSON-escaped, is found too) and the secret parameter's value."""
    body = [line for line in ssh_server.private_key_pem.splitlines() if line and not line.startswith("-----")]
    assert ssh_server.password and body
    return {"password": ssh_server.password, "secret parameter": TOKEN,
            **{f"private key line {i}": line for i, line in enumerate(body, 1)}}


def _hits(needles: dict[str, str], where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, needle in needles.items() if needle in text]


class CommandLines:
    """Every process's command line, read from /proc over and over while the run runs."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def _scan(self) -> None:
        while not self._stop.is_set():
            for path in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:  # the process ended meanwhile
                    pass
            self._stop.wait(0.05)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def shipping(elasticsearch: Any) -> Iterator[str]:
    """Output lines go to the session's Elasticsearch for this test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_ELASTICSEARCH_URL", elasticsearch.url)
        yield elasticsearch.url


async def _prefect_views(run_id: str, block_name: str) -> str:
    """The run's logs, the run itself and the host block, as Prefect's API gives them out."""
    async with get_client() as client:
        logs, offset = [], 0
        while page := await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])), offset=offset, limit=200
        ):
            logs += [log.model_dump_json() for log in page]
            offset += len(page)
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(run_id)])))
        block = await client.read_block_document_by_name(block_name, "sms-ssh-host", include_secrets=False)
    assert logs and runs
    return "\n".join([*logs, *(run.model_dump_json() for run in runs), block.model_dump_json()])


def _catalog_dump(catalog: Catalog) -> str:
    """Every row of every table of the catalog."""
    tables = MetaData()
    tables.reflect(catalog.engine)
    with catalog.engine.connect() as connection:
        return "\n".join(
            f"{table.name}: {row!r}" for table in tables.sorted_tables for row in connection.execute(select(table))
        )


def _elasticsearch_documents(url: str, run_id: str) -> list[dict[str, Any]]:
    """Every document of the run (after a refresh, so that the last lines are searchable too)."""
    httpx.post(f"{url}/sms-logs-*/_refresh", timeout=30).raise_for_status()
    reply = httpx.post(
        f"{url}/sms-logs-*/_search", json={"size": 1000, "query": {"term": {"sms.run_id": run_id}}}, timeout=30
    )
    reply.raise_for_status()
    return [hit["_source"] for hit in reply.json()["hits"]["hits"]]


async def test_a_run_leaves_no_host_secret_anywhere(catalog, ssh_server, prefect_server, shipping) -> None:
    needles = _needles(ssh_server)
    block = block_of(ssh_server, password=ssh_server.password)
    host = f"leak-{uuid.uuid4().hex[:8]}"
    await hosts.add(host, block)
    name = f"leak-{uuid.uuid4().hex[:8]}"
    with catalog.session() as s:
        spec = ScriptSpec.parse({"name": name, "interpreter": "bash", "host": host,
                                 "parameters": [{"name": "word"}, {"name": "token", "secret": True}]})
        add_script(s, spec, author="tests",
                   content='echo "start $1"; echo "token of ${#SMS_SECRET_TOKEN}"; sleep 2; env | grep -c . ; echo done >&2\n')
    with CommandLines() as processes:
        state: State = await run_script(script=name, parameters={"word": "one", "token": TOKEN}, return_state=True)
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    await _delivered(run_id)

    documents = _elasticsearch_documents(shipping, run_id)
    # The search does find the run, and the secret reached the script (by its length only).
    assert {doc["message"] for doc in documents} >= {"start --word=one", f"token of {len(TOKEN)}", "done"}
    assert any("/.sms/run/" in line and line.endswith(" --word=one ") for line in processes.seen)  # seen while it ran
    stored = await SSHHost.aload(host)
    with catalog.session() as s:
        audit = [repr(event) + json.dumps(event.detail) for event in list_audit(s)]
    places = {
        "Prefect's logs, run and block": await _prefect_views(run_id, host),
        "the catalog (every table)": _catalog_dump(catalog),
        "the audit trail": "\n".join(audit),
        "Elasticsearch's documents": json.dumps(documents),
        "the processes' command lines": "\n".join(processes.seen),
        "the reprs": "\n".join([repr(stored), str(stored), repr(stored.target()), repr(catalog), repr(state)]),
    }
    leaks = [hit for where, text in places.items() for hit in _hits(needles, where, text)]
    assert leaks == []
