"""Fault drills on the HA topology (infra/ha, docs/deploy.md): one process of a replicated service
is killed while runs are in flight, and the drill asserts the invariants of ``ha_load``: every run
terminal, none ran twice, nothing left on the hosts, every output line once; it prints the time
the service took to be back. One topology serves the whole module (Galera, PostgreSQL, Redis, two
Prefect API processes and their services process, HAProxy, two gateways, two sms workers).

CI runs 30 runs per drill on two sshd hosts; ``SMS_HA_DRILLS_FULL=1`` runs the issue's 100."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from datetime import UTC, datetime

import httpx
import pymysql
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import ApiError, Elasticsearch, TransportError
from prefect import get_client

from infra.ha.topology import HATopology
from infra.testbed.process import PeerError, process_tree
from infra.testbed.sshd import SshServer
from sms_plugin import hosts
from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import GatewaySession, utcnow
from sms_plugin.telemetry.logs.elastic import connect
from tests.conftest import talking_to
from tests.integration.conftest import block_of, until
from tests.integration.ha_load import FINAL, LINES, check_invariants, flow_runs, report, start_load, state_of
from tests.integration.test_events_kafka import first_copies
from tests.integration.test_gateway_auth import browser_login

pytestmark = [pytest.mark.integration, pytest.mark.drills, pytest.mark.timeout(1800)]
"""1,800 s: the first drill of a session also starts the topology (2-8 minutes)."""

RUNS = 100 if os.environ.get("SMS_HA_DRILLS_FULL") == "1" else 30
ES_PROBE = "sms-ha-probe"
"""Drill 10 writes here to time when Elasticsearch takes writes again (not an SMS index)."""
KAFKA_PROBE = "sms-ha-probe"
"""Drill 11 writes here (three partitions) to time when every partition takes writes again."""


@pytest.fixture(scope="module")
def ha() -> Iterator[HATopology]:
    """The HA topology (gateways only once a test asks for ``ha_gateways``); this module's process
    talks to its Prefect and catalog through HAProxy."""
    topology = HATopology(
        pool=f"sms-ha-{uuid.uuid4().hex[:6]}",
        worker_env={"SMS_HOME": os.environ["SMS_HOME"], "SMS_HEARTBEAT_SECONDS": "1"},
    )
    try:
        topology.start()
    except PeerError as exc:
        pytest.fail(f"the HA topology could not start: {exc}", pytrace=False)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in topology.client_env().items():
            patch.setenv(name, value)
        patch.setenv("SMS_HEARTBEAT_SECONDS", "1")
        with talking_to(topology, auth_string=topology.auth_string):
            yield topology


@pytest.fixture(scope="module")
def ha_gateways(ha, keycloak) -> HATopology:
    """The topology with its two gateways behind HAProxy (HTTPS), trusting the test realm."""
    if not ha.gateways:
        ha.add_gateways(keycloak.issuer)
        keycloak.allow_redirect(f"{ha.gateway_url}/auth/callback")
    return ha


@pytest.fixture(scope="module")
def catalog(ha) -> Iterator[Catalog]:
    opened = Catalog(ha.catalog_url)
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def second_host() -> Iterator[SshServer]:
    peer = SshServer()
    try:
        peer.start()
    except PeerError as exc:
        pytest.fail(f"sshd could not start: {exc}", pytrace=False)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def ha_hosts(ha, ssh_server, second_host) -> list[str]:
    names = []
    for server in (ssh_server, second_host):
        name = f"ha-{uuid.uuid4().hex[:6]}"
        asyncio.run(hosts.add(name, block_of(server, max_parallel_sessions=RUNS)))
        names.append(name)
    return names


def sigkill(pid: int | None) -> None:
    assert pid is not None
    for member in process_tree(pid):
        os.kill(member, signal.SIGKILL)


def prefect_answers(ha: HATopology) -> bool:
    try:
        reply = httpx.post(
            f"{ha.prefect_api_url}/flow_runs/count", json={}, timeout=3,
            headers={"Authorization": f"Basic {base64.b64encode(ha.auth_string.encode()).decode()}"},  # as Prefect's client
        )
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


# --- the catalog on Galera -------------------------------------------------------------------------


def _bump(catalog: Catalog, session_id: str, attempts: list[int]) -> None:
    """Read-modify-write of one row (locked for update), counted per attempt."""

    def work(s) -> None:
        attempts.append(1)
        row = s.get(GatewaySession, session_id, with_for_update=True)
        row.data = str(int(row.data) + 1)

    catalog.transaction(work)


def test_two_writers_on_two_galera_nodes_conflict_and_both_land_once(ha):
    """Each writer increments the same row 25 times through its own node: Galera aborts the loser
    of each conflict (1213 at commit), the catalog runs its transaction again, and the count ends
    at exactly 50 (no increment lost, none applied twice)."""
    session_id = uuid.uuid4().hex
    first, second = (
        Catalog(f"mysql+pymysql://sms:sms-galera-pw@127.0.0.1:{node.port}/sms") for node in ha.galera.nodes[:2]
    )
    try:
        with first.session() as s:
            s.add(GatewaySession(id=session_id, data="0", expires_at=utcnow()))
        attempts: list[int] = []
        start = threading.Barrier(2)

        def writer(catalog: Catalog) -> None:
            start.wait()
            for _ in range(25):
                _bump(catalog, session_id, attempts)

        threads = [threading.Thread(target=writer, args=(c,)) for c in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        with second.session() as s:
            assert s.get(GatewaySession, session_id).data == "50"
        report(f"Galera conflicts retried: {len(attempts) - 50} of 50 transactions")
        assert len(attempts) > 50, "no conflict happened: the test proved nothing"
    finally:
        first.dispose()
        second.dispose()


# --- sessions any gateway can serve -----------------------------------------------------------------


def test_a_browser_session_is_served_by_either_gateway(ha_gateways, monkeypatch):
    """Log in through HAProxy (TLS ends there), then use the session cookie on each gateway directly."""
    ha = ha_gateways
    monkeypatch.setenv("SSL_CERT_FILE", str(ha.ca_path))
    with closing(browser_login(ha.gateway_url, "viola")) as browser:
        for _ in range(4):  # round robin: both gateways answer through the balancer
            me = browser.get(f"{ha.gateway_url}/auth/me")
            assert me.status_code == 200 and me.json()["username"] == "viola", me.text
        cookie = browser.cookies.jar
        value = next(c.value for c in cookie if c.name == "sms_session")
    for gateway in ha.gateways:
        direct = httpx.get(f"{gateway.url}/auth/me", cookies={"sms_session": value}, timeout=10)
        assert direct.status_code == 200 and direct.json()["username"] == "viola", (gateway.url, direct.text)
    forged = httpx.get(f"{ha.gateways[0].url}/auth/me", cookies={"sms_session": "x" + value[1:]}, timeout=10)
    assert forged.status_code == 401


# --- drills ---------------------------------------------------------------------------------------------


async def test_drill_1_sigkill_of_one_prefect_api_process(ha, catalog, ssh_server, ha_hosts):
    load = await start_load(catalog, ha_hosts, RUNS)
    await asyncio.sleep(3)  # runs are being picked up and started
    victim = ha.apis[0]
    killed_at = time.monotonic()
    sigkill(victim.pid)
    back = await until(lambda: prefect_answers(ha), 60, interval=0.2)
    recovered = time.monotonic() - killed_at
    assert back, "Prefect's API did not answer through HAProxy after one API process died"
    report(f"drill 1: Prefect API answered through HAProxy {recovered:.1f} s after the SIGKILL")
    victim.halt()
    await check_invariants(load, ssh_server, timeout=240)
    await asyncio.to_thread(victim.resume)


async def test_drill_3_sigkill_of_one_gateway_under_calls(ha_gateways, keycloak, monkeypatch):
    """Clients keep calling through HAProxy; one gateway dies; after HAProxy's checks every call
    succeeds again (calls in flight on the dead gateway may fail: it is counted)."""
    ha = ha_gateways
    monkeypatch.setenv("SSL_CERT_FILE", str(ha.ca_path))
    token = keycloak.token("viola")
    answers: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def caller() -> None:
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
            while not stop.is_set():
                try:
                    code = (await client.get(f"{ha.gateway_url}/api/v1/scripts")).status_code
                except httpx.HTTPError:
                    code = 0
                answers.append((time.monotonic(), code))
                await asyncio.sleep(0.05)

    callers = [asyncio.create_task(caller()) for _ in range(4)]
    await asyncio.sleep(2)
    victim = ha.gateways[0]
    killed_at = time.monotonic()
    sigkill(victim.pid)
    await asyncio.sleep(6)
    stop.set()
    await asyncio.gather(*callers)
    victim.halt()
    before = [code for at, code in answers if at < killed_at]
    after = [(at, code) for at, code in answers if at >= killed_at]
    assert before and set(before) == {200}, set(before)
    failed = [at for at, code in after if code != 200]
    recovered = (max(failed) - killed_at) if failed else 0.0
    settled = [code for at, code in after if at > killed_at + 3]
    report(f"drill 3: {len(failed)} of {len(after)} calls failed; all succeed again {recovered:.1f} s after the SIGKILL")
    assert settled and set(settled) == {200}, "calls still fail 3 s after a gateway died"
    await asyncio.to_thread(victim.start)


async def test_drill_4_sigkill_of_a_worker(ha, catalog, ssh_server, ha_hosts):
    """The dead worker's runs are Crashed by housekeeping and their scripts killed; the other
    worker's runs complete."""
    from flows.housekeeping import housekeeping

    load = await start_load(catalog, ha_hosts, RUNS)
    assert await until(lambda: len(load.ran()) >= RUNS // 2, 120), "the runs did not start"
    victim = ha.workers[0]
    killed_at = time.monotonic()
    sigkill(victim.pid)
    victim.halt()

    async def reaped() -> bool:
        await housekeeping()
        return all(state_of(r) in FINAL for r in (await flow_runs(load.ids)).values())

    if not await until(reaped, 180, interval=2):
        states = Counter(state_of(r) for r in (await flow_runs(load.ids)).values())
        pytest.fail(f"runs not terminal 180 s after the worker's SIGKILL: {dict(states)}")
    report(f"drill 4: every run terminal {time.monotonic() - killed_at:.1f} s after the worker's SIGKILL")
    await check_invariants(load, ssh_server, timeout=60)
    await asyncio.to_thread(victim.start)


async def test_drill_5_a_galera_node_dies_then_the_catalog_is_away_for_30_s(ha, catalog, ssh_server, ha_hosts):
    load = await start_load(catalog, ha_hosts, RUNS)
    await asyncio.sleep(3)
    node = ha.galera.nodes[0]  # the node HAProxy sends the writes to
    killed_at = time.monotonic()
    sigkill(node.pid)
    node.halt()

    def catalog_answers() -> bool:
        try:
            connection = pymysql.connect(
                host="127.0.0.1", port=ha.catalog_port, user="sms", password="sms-galera-pw", database="sms",
                connect_timeout=2,
            )
        except pymysql.MySQLError:
            return False
        with closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM scripts")
        return True

    assert await until(catalog_answers, 30, interval=0.2), "the catalog did not fail over to a backup node"
    report(f"drill 5: catalog answered through HAProxy {time.monotonic() - killed_at:.1f} s after a node's SIGKILL")
    assert ha.catalog_proxy is not None
    ha.catalog_proxy.stop()  # the whole catalog unreachable
    outage_at = time.monotonic()
    await asyncio.sleep(30)
    await asyncio.to_thread(ha.catalog_proxy.start)
    report(f"drill 5: the catalog back after {time.monotonic() - outage_at:.1f} s of outage")
    await check_invariants(load, ssh_server, timeout=300)
    await asyncio.to_thread(node.resume)



async def outage(
    number: int, what: str, *, down: Callable[[], None], up: Callable[[], None], answers: Callable[[], bool]
) -> float:
    """The fault the restart drills share: with a load in flight, ``down()`` then ``up()`` (the
    restart, in a thread); prints and returns the seconds from ``down()`` until ``answers()``."""
    await asyncio.sleep(3)  # runs are being picked up and started
    down_at = time.monotonic()
    down()
    await asyncio.to_thread(up)
    assert await until(answers, 120, interval=0.2), f"drill {number}: nothing answered after {what}"
    recovered = time.monotonic() - down_at
    report(f"drill {number}: {what}; service back {recovered:.1f} s after it went down")
    return recovered


def in_parallel(*starts: Callable[[], None]) -> None:
    """Runs ``starts`` at once (each in a thread) and waits for all; the first error is raised."""
    with ThreadPoolExecutor(len(starts)) as pool:
        for future in [pool.submit(start) for start in starts]:
            future.result()


async def test_drill_2_restart_of_the_whole_prefect_server(ha, catalog, ssh_server, ha_hosts):
    """Every API process and the services process stopped (SIGTERM), then started again together."""
    parts = [*ha.apis, ha.services]
    load = await start_load(catalog, ha_hosts, RUNS)
    await outage(
        2, "the whole Prefect server restarted", down=lambda: [part.halt() for part in parts],
        up=lambda: in_parallel(*(part.resume for part in parts)), answers=lambda: prefect_answers(ha),
    )
    await check_invariants(load, ssh_server, timeout=300)


async def test_drill_6_postgresql_restart(ha, catalog, ssh_server, ha_hosts):
    load = await start_load(catalog, ha_hosts, RUNS)
    await outage(
        6, "PostgreSQL restarted", down=ha.postgresql.halt, up=ha.postgresql.resume,
        answers=lambda: prefect_answers(ha),
    )
    await check_invariants(load, ssh_server, timeout=300)


async def test_drill_7_redis_restart(ha, catalog, ssh_server, ha_hosts):
    load = await start_load(catalog, ha_hosts, RUNS)
    await outage(7, "Redis restarted", down=ha.redis.halt, up=ha.redis.resume, answers=lambda: prefect_answers(ha))
    await check_invariants(load, ssh_server, timeout=300)


async def test_drill_8_sshd_killed_on_a_host_mid_run(ha, catalog, ssh_server, second_host, ha_hosts):
    """sshd and its connections on the second host SIGKILLed, started again 5 s later. Its runs
    fail (the connection died); their scripts, which live on without sshd, must be killed by SMS
    once the host answers again, long before they would end by themselves (60 s)."""
    load = await start_load(catalog, ha_hosts, RUNS, long_seconds=60)
    at_crash: set[str] = set()

    def crash() -> None:
        at_crash.update(line.split()[0] for line in second_host.served(load.marker))
        assert at_crash, "no script ran on the second host: the drill proves nothing"
        second_host.crash()

    def left() -> set[str]:
        """The scripts that ran at the crash and still run (runs started since are not counted)."""
        return at_crash & {line.split()[0] for line in second_host.served(load.marker)}

    def restart() -> None:
        time.sleep(5)
        second_host.resume()

    await outage(8, "sshd killed on a host for 5 s", down=crash, up=restart, answers=lambda: prefect_answers(ha))
    back_at = time.monotonic()
    assert await until(lambda: not left(), 35), f"scripts left running after the crash: {left()}"
    report(f"drill 8: the {len(at_crash)} scripts of the crash were gone {time.monotonic() - back_at:.1f} s after sshd was back")
    await check_invariants(load, ssh_server, timeout=300)


# --- Prometheus as an identical pair --------------------------------------------------------------------


def _runs_counted(prometheus, marker: str) -> float | None:
    """The load's ended runs as ``prometheus`` has them (None: no series yet)."""
    result = prometheus.query(f'sum(sms_script_runs_total{{script=~"ha-{marker}-.*"}})')
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_pair_one_prometheus_and_its_exporter_killed(ha, catalog, ssh_server, ha_hosts):
    """Two monitoring stacks, each a Prometheus scraping its own exporter. Mid-load one stack's
    Prometheus and exporter are SIGKILLed: the other Prometheus counts every run of the load once;
    the killed stack, started again, counts the same (its exporter rebuilds from Prefect)."""
    if not ha.prometheus:
        await asyncio.to_thread(ha.add_monitoring)
    (dead_prometheus, alive_prometheus), dead_exporter = ha.prometheus, ha.exporters[0]
    for prometheus in ha.prometheus:
        up = prometheus.wait_for('up{job="sms-exporter"} == 1', lambda result: len(result) == 1, timeout=60)
        assert len(up) == 1, f"{prometheus.url} does not scrape its exporter: {up}"
    load = await start_load(catalog, ha_hosts, RUNS)
    await asyncio.sleep(3)  # runs are being picked up and started
    killed_at = time.monotonic()
    sigkill(dead_prometheus.pid)
    sigkill(dead_exporter.pid)
    dead_prometheus.halt()
    dead_exporter.halt()
    await check_invariants(load, ssh_server, timeout=300)

    counted = await until(lambda: _runs_counted(alive_prometheus, load.marker) == RUNS, 60, interval=1)
    report(f"drill Prometheus pair: the other Prometheus counted all {RUNS} runs "
          f"{time.monotonic() - killed_at:.1f} s after the SIGKILLs")
    assert counted, f"the surviving Prometheus counts {_runs_counted(alive_prometheus, load.marker)} of {RUNS}"

    await asyncio.to_thread(dead_exporter.stop)
    await asyncio.to_thread(dead_exporter.start)  # same port, its rebuild from Prefect
    await asyncio.to_thread(dead_prometheus.stop)
    await asyncio.to_thread(dead_prometheus.start)
    dead_prometheus.scrape("sms-exporter", [dead_exporter.target])
    again = await until(lambda: _runs_counted(dead_prometheus, load.marker) == RUNS, 60, interval=1)
    assert again, f"the restarted stack counts {_runs_counted(dead_prometheus, load.marker)} of {RUNS}"

# --- drill 9: a host cut off the network ------------------------------------------------------------------

CUT_RUN_TIMEOUT = 10
"""The run timeout of the load's scripts on the cut host: its runs caught by the cut end by it."""
CUT_SECONDS = 20
"""How long the host stays cut off: longer than the run timeout, well within the reconnect
back-off the runs caught by the cut start after it (flows/host_execution.py, RECONNECT_SECONDS)."""


def run_ids_of(server: SshServer, pattern: str) -> set[str]:
    """The SMS_RUN_ID of the scripts started through ``server`` whose line contains ``pattern``."""
    found = set()
    for line in server.served(pattern):
        try:
            environ = Path(f"/proc/{line.split()[0]}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        found.update(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"SMS_RUN_ID="))
    return found


async def test_drill_9_a_host_cut_off_the_network_then_restored(ha, catalog, ssh_server, cut_off_sshd, ha_hosts):
    """The cut host's packets are dropped silently for CUT_SECONDS while its long scripts (60 s,
    run timeout CUT_RUN_TIMEOUT) run. Their runs fail by their timeout (the kill cannot reach the
    host: the silent connection is dropped after the control timeout); the scripts, which run on
    behind the cut, are killed once the host is back, by the runs' reconnect back-off."""
    from tests.integration.ha_load import state_of, until_final

    name = f"ha-cut-{uuid.uuid4().hex[:6]}"
    await hosts.add(name, block_of(cut_off_sshd, max_parallel_sessions=RUNS))
    network = cut_off_sshd.network
    assert network is not None
    load = await start_load(catalog, [name, ha_hosts[0]], RUNS, long_seconds=60, timeouts={name: CUT_RUN_TIMEOUT})
    long_scripts = "sleep 60."
    assert await until(lambda: len(run_ids_of(cut_off_sshd, long_scripts)) >= 2, 120), "no long script ran on the cut host"
    caught = run_ids_of(cut_off_sshd, long_scripts)
    cut_at, cut_clock = time.monotonic(), utcnow()
    network.cut()

    def left() -> set[str]:
        return caught & run_ids_of(cut_off_sshd, long_scripts)

    await asyncio.sleep(CUT_SECONDS)
    assert left(), "every script of the cut ended while the host was cut off: the drill proves nothing"
    network.restore()
    back_at = time.monotonic()
    assert await until(lambda: not left(), 60), f"scripts of the cut left running after the host was back: {left()}"
    killed_after = time.monotonic() - back_at
    caught_runs = await until_final(sorted(caught), 120)
    states = {run_id: state_of(run) for run_id, run in caught_runs.items()}
    assert set(states.values()) == {"FAILED"}, states
    ended = [(run.end_time - cut_clock).total_seconds() for run in caught_runs.values() if run.end_time]
    report(
        f"drill 9: host cut off for {CUT_SECONDS} s; the scripts of the {len(caught)} runs caught by the cut "
        f"(run timeout {CUT_RUN_TIMEOUT} s) were gone {killed_after:.1f} s after the host was back "
        f"({time.monotonic() - cut_at:.1f} s after the cut); the runs ended Failed {min(ended):.1f}-{max(ended):.1f} s after the cut"
    )
    for run_id, run in caught_runs.items():
        report(f"drill 9: {run_id}: {run.state.message if run.state else ''}")
    await check_invariants(load, ssh_server, timeout=300)

# --- drills 10 and 11: a node of the Elasticsearch cluster, a broker of Kafka ---------------------------


def joined(ha: HATopology, part: str, add: Callable[[], None]) -> HATopology:
    """``ha`` once ``add()`` has started its optional ``part`` (started once per module)."""
    if getattr(ha, part) is None:
        try:
            add()
        except PeerError as exc:
            pytest.fail(f"the topology's {part} could not start: {exc}", pytrace=False)
    return ha


@pytest.fixture(scope="module")
def ha_elasticsearch(ha) -> HATopology:
    """The topology with its three-node Elasticsearch cluster and ``sms log-shipper``; the workers
    (restarted) ship output to every node."""
    return joined(ha, "elasticsearch", ha.add_elasticsearch)


@pytest.fixture(scope="module")
def ha_kafka(ha) -> HATopology:
    """The topology with three Kafka brokers and ``sms events`` publishing to them."""
    return joined(ha, "kafka", ha.add_kafka)


def es_client(nodes: list) -> Elasticsearch:
    """SMS's own client (``SMS_ELASTICSEARCH_URL`` as a comma-separated list) on ``nodes``."""
    return connect(",".join(node.url for node in nodes))


def node_of_primary(ha: HATopology, index: str):
    """The Elasticsearch node that holds the primary shard of ``index``, once its replica has started
    too (None before: a replica still recovering cannot be promoted, and the index would be red
    until the node is back, as a first run of the drill showed)."""
    assert ha.elasticsearch is not None
    try:
        shards = es_client(ha.elasticsearch.nodes).cat.shards(index=index, format="json")
    except (ApiError, TransportError):  # 404 until the first line of the day creates it
        return None
    if not shards or any(shard["state"] != "STARTED" for shard in shards) or len(shards) < 2:
        return None
    names = {shard["node"] for shard in shards if shard["prirep"] == "p"}
    return next((node for node in ha.elasticsearch.nodes if node.cluster.node_name in names), None)


def es_writes(client: Elasticsearch) -> bool:
    try:
        client.index(index=ES_PROBE, document={"at": time.time()})
    except (ApiError, TransportError):
        return False
    return True


def lines_in_elasticsearch(client: Elasticsearch, run_ids: list[str]) -> Counter[str]:
    """How often each output line of ``run_ids`` is in Elasticsearch (one document a line, searchable
    within the index's 1 s refresh interval)."""
    found: Counter[str] = Counter()
    for chunk in (run_ids[k:k + 100] for k in range(0, len(run_ids), 100)):
        hits = client.search(index="sms-logs-*", query={"terms": {"sms.run_id": chunk}}, size=10_000,
                             source=["message"])["hits"]["hits"]
        found.update(hit["_source"]["message"] for hit in hits)
    return found


async def test_drill_10_an_elasticsearch_node_stopped(ha_elasticsearch, catalog, ssh_server, ha_hosts):
    """The node holding the primary of today's log index stopped (SIGTERM) mid-load and left down
    until the load's checks are done: its replica on another node takes over, SMS's shippers move
    to the other nodes of ``SMS_ELASTICSEARCH_URL``, and every line of every completed run is in
    Elasticsearch exactly once. The node is started again afterwards."""
    ha = ha_elasticsearch
    assert ha.elasticsearch is not None
    everyone = es_client(ha.elasticsearch.nodes)
    everyone.index(index=ES_PROBE, document={"at": time.time()}, refresh=True)
    load = await start_load(catalog, ha_hosts, RUNS)
    today = f"sms-logs-{datetime.now(UTC):%Y.%m.%d}"
    victim = await until(lambda: node_of_primary(ha, today), 60, interval=0.5)
    assert victim is not None, f"no line of the load reached {today}"
    in_flight = [run for run in (await flow_runs(load.ids)).values() if state_of(run) not in FINAL]
    assert in_flight, "the load was over before the node stopped: the drill proves nothing"
    stopped_at = time.monotonic()
    await asyncio.to_thread(victim.halt)
    assert await until(lambda: es_writes(everyone), 120, interval=0.2), "Elasticsearch took no write after a node stopped"
    report(f"drill 10: Elasticsearch took writes through SMS's client {time.monotonic() - stopped_at:.1f} s after "
          f"node {victim.cluster.node_name} (primary of {today}) was stopped with {len(in_flight)} runs in flight")
    await check_invariants(load, ssh_server, timeout=300)
    completed = [i for i, run in (await flow_runs(load.ids)).items() if state_of(run) == "COMPLETED"]
    expected = {f"ha-line {run_id} {k}" for run_id in completed for k in range(1, LINES + 1)}
    survivors = es_client([node for node in ha.elasticsearch.nodes if node is not victim])

    def all_there() -> Counter[str] | None:
        try:
            found = lines_in_elasticsearch(survivors, completed)
        except (ApiError, TransportError):  # slow while the replicas recover: try again
            return None
        return found if set(found) >= expected else None

    seen = await until(all_there, 60, interval=1) or lines_in_elasticsearch(survivors, completed)
    lost, doubled = expected - set(seen), [line for line in expected if seen[line] > 1]
    report(f"drill 10: {len(expected)} lines of {len(completed)} completed runs; in Elasticsearch: "
          f"lost {len(lost)}, doubled {len(doubled)}")
    assert not lost and not doubled, (sorted(lost)[:10], doubled[:10])
    resumed_at = time.monotonic()
    await asyncio.to_thread(victim.resume)
    health = await asyncio.to_thread(es_client(ha.elasticsearch.nodes).options(request_timeout=130).cluster.health,
                                     wait_for_status="green", timeout="120s")
    assert health["status"] == "green", health
    report(f"drill 10: the node was back and the cluster green {time.monotonic() - resumed_at:.1f} s after its restart")


def kafka_writes(producer: Producer, partitions: int) -> bool:
    """One record on each partition of the probe topic, acknowledged by every in-sync replica."""
    failures: list[object] = []
    for partition in range(partitions):
        producer.produce(KAFKA_PROBE, b"probe", partition=partition,
                         on_delivery=lambda error, _: failures.append(error) if error else None)
    return producer.flush(10) == 0 and not failures


def run_events(bootstrap: str, run_ids: set[str], done: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
    """The CloudEvents of ``run_ids`` on ``sms.runs`` (every copy), read from the start by a fresh
    consumer group until ``done(them)`` holds or ``timeout`` passes."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"drill-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["sms.runs"])
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(found):
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None and (event := json.loads(message.value())).get("subject") in run_ids:
                    found.append(event)
    finally:
        consumer.close()
    return found


async def prefect_states(run_ids: list[str]) -> Counter[tuple[str, str]]:
    """(run id, state name) of every state each run went through, from Prefect's state history."""
    async with get_client() as client:
        histories = await asyncio.gather(*(client.read_flow_run_states(uuid.UUID(i)) for i in run_ids))
    return Counter((run_id, state.name) for run_id, states in zip(run_ids, histories, strict=True) for state in states)


def published_states(events: list[dict]) -> Counter[tuple[str, str]]:
    """(run id, state name) of every distinct run-state event (a re-sent copy must be identical)."""
    return Counter((event["subject"], event["data"]["state"]) for event in first_copies(events)
                   if "state_type" in event["data"])


async def test_drill_11_a_kafka_broker_stopped(ha_kafka, catalog, ssh_server, ha_hosts):
    """The broker leading most partitions of ``sms.runs`` stopped (SIGTERM) mid-load and left down
    until the checks are done (replication factor 3, ``min.insync.replicas=2``: two brokers take
    every write). Every state every run went through (Prefect's state history) is on ``sms.runs``,
    with every run's host steps and ``sms.run.finished``. Delivery is at least once with stable
    ids (docs/events.md): a re-sent copy must be identical, and no state has two ids."""
    ha = ha_kafka
    assert ha.kafka is not None
    admin = AdminClient({"bootstrap.servers": ha.kafka.bootstrap})
    admin.create_topics([NewTopic(KAFKA_PROBE, num_partitions=3, replication_factor=3)])[KAFKA_PROBE].result(60)
    producer = Producer({"bootstrap.servers": ha.kafka.bootstrap, "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": 5000})
    assert await until(lambda: kafka_writes(producer, 3), 60, interval=0.5), "the probe topic took no record with every broker up"
    load = await start_load(catalog, ha_hosts, RUNS)
    await asyncio.sleep(3)  # runs are being picked up and started; their first events are published

    def runs_topic_leaders() -> Counter[int]:
        topic = admin.list_topics("sms.runs", timeout=10).topics["sms.runs"]
        return Counter(partition.leader for partition in topic.partitions.values() if partition.leader >= 0)

    leaders = await until(runs_topic_leaders, 120, interval=0.5)
    assert leaders, "no event of the load reached sms.runs"
    victim = next(node for node in ha.kafka.nodes if node.node_id == leaders.most_common(1)[0][0])
    stopped_at = time.monotonic()
    await asyncio.to_thread(victim.halt)
    assert await until(lambda: kafka_writes(producer, 3), 120, interval=0.2), "Kafka took no write after a broker stopped"
    report(f"drill 11: every partition took acks=all writes {time.monotonic() - stopped_at:.1f} s after "
          f"broker {victim.node_id} (leader of {leaders[victim.node_id]} of {len(leaders)} partitions of sms.runs) stopped")
    await check_invariants(load, ssh_server, timeout=300)
    expected = await prefect_states(load.ids)

    def complete(events: list[dict]) -> bool:
        finished = {e["subject"] for e in events if e["type"] == "sms.run.finished"}
        started = {e["subject"] for e in events if e["type"] == "sms.run.host.started"}
        return not (expected - published_states(events)) and finished >= set(load.ids) and started >= set(load.ids)

    events = await asyncio.to_thread(run_events, ha.kafka.bootstrap, set(load.ids), complete, 120)
    published = published_states(events)
    lost = expected - published
    distinct = first_copies(events)
    resent = len(events) - len(distinct)
    per_run = Counter(e["type"] for e in distinct)
    report(f"drill 11: {len(distinct)} distinct events of {len(load.ids)} runs ({dict(per_run)}); "
          f"states lost {sum(lost.values())}, copies re-sent {resent}")
    assert not lost, f"run states never published: {sorted(lost)[:10]}"
    assert published == expected, f"a state published under two ids: {sorted((published - expected).elements())[:10]}"
    assert complete(events), "a run's sms.run.host.started or sms.run.finished never reached sms.runs"
    resumed_at = time.monotonic()
    await asyncio.to_thread(victim.resume)
    report(f"drill 11: the broker was back {time.monotonic() - resumed_at:.1f} s after its restart")
