"""The test bed itself: every peer is real, reachable, and cleaned up after."""

from __future__ import annotations

import base64
import io
import socket
import uuid
from pathlib import Path

import httpx
import paramiko
import prefect
import pytest
import sqlalchemy
from prefect.settings import PREFECT_API_URL

from infra.testbed.mariadb import MariaDB
from infra.testbed.prefect_server import PrefectServer
from infra.testbed.prefect_worker import PrefectWorker
from infra.testbed.process import PeerError, is_alive
from infra.testbed.sshd import SshServer

pytestmark = pytest.mark.integration


def _ssh_client(ssh: SshServer, **connect: object) -> paramiko.SSHClient:
    """A paramiko client that trusts only the test bed's host keys."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for line in ssh.host_public_keys:
        key_type, blob = line.split()
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
        client.get_host_keys().add(f"[{ssh.host}]:{ssh.port}", key_type, key)
    client.connect(
        ssh.host, ssh.port, ssh.username, look_for_keys=False, allow_agent=False, **connect
    )
    return client


def _run(client: paramiko.SSHClient, command: str) -> tuple[str, int]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    return stdout.read().decode(), stdout.channel.recv_exit_status()


def test_mariadb_answers_a_query(mariadb: MariaDB) -> None:
    engine = sqlalchemy.create_engine(mariadb.url)
    try:
        with engine.connect() as connection:
            version = connection.execute(sqlalchemy.text("SELECT VERSION()")).scalar_one()
            database = connection.execute(sqlalchemy.text("SELECT DATABASE()")).scalar_one()
    finally:
        engine.dispose()
    assert "MariaDB" in version
    assert database == "sms_test"
    assert mariadb.url == f"mysql+pymysql://root@127.0.0.1:{mariadb.port}/sms_test"


@pytest.mark.parametrize("host_key_type", ["ssh-ed25519", "ssh-rsa"])
def test_ssh_key_login_with_pinned_host_key(ssh_server: SshServer, host_key_type: str) -> None:
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(ssh_server.private_key_pem))
    # Disable the other host key type, so the server must prove it holds this one.
    other = ["ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"] if host_key_type == "ssh-ed25519" else []
    if host_key_type == "ssh-rsa":
        other = ["ssh-ed25519"]
    client = _ssh_client(ssh_server, pkey=pkey, disabled_algorithms={"keys": other})
    try:
        output, status = _run(client, "id -un")
        server_key = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
    finally:
        client.close()
    assert (output.strip(), status) == ("smstest", 0)
    assert f"{server_key.get_name()} {server_key.get_base64()}" in ssh_server.host_public_keys
    assert server_key.get_name() == host_key_type


def test_ssh_refuses_an_unknown_host_key(ssh_server: SshServer) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            ssh_server.host,
            ssh_server.port,
            ssh_server.username,
            password=ssh_server.password,
            look_for_keys=False,
            allow_agent=False,
        )
    client.close()


def test_ssh_password_login(ssh_server: SshServer) -> None:
    client = _ssh_client(ssh_server, password=ssh_server.password)
    try:
        output, status = _run(client, "id -un; pwd")
    finally:
        client.close()
    assert (output.split(), status) == (["smstest", "/home/smstest"], 0)


def test_ssh_wrong_password_is_refused(ssh_server: SshServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _ssh_client(ssh_server, password=ssh_server.password + "-wrong").close()


def test_sshd_stop_kills_what_smstest_left_running() -> None:
    marker = f"sleep 3{uuid.uuid4().int % 10**6:06d}"
    with SshServer() as ssh:
        client = _ssh_client(ssh, password=ssh.password)
        try:
            _run(client, f"setsid nohup {marker} >/dev/null 2>&1 & echo $!")
        finally:
            client.close()
        left = ssh.processes(marker)
        assert len(left) == 1 and left[0].endswith(marker)
        pid = int(left[0].split()[0])
        tmp = ssh.tmp
        assert tmp is not None and tmp.exists()
    assert ssh.processes(marker) == []
    assert not tmp.exists()
    assert not is_alive(pid)


def test_a_peer_that_cannot_start_reports_its_log_and_leaves_nothing() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        peer = SshServer(port=busy.getsockname()[1])
        with pytest.raises(PeerError) as failure:
            peer.start()
    assert "exited with code" in failure.value.reason
    assert "Cannot bind any address" in failure.value.log_tail
    assert peer.process is None and peer.tmp is None


def test_a_peer_that_is_not_ready_in_time_is_stopped() -> None:
    peer = MariaDB(timeout=0)
    with pytest.raises(PeerError) as failure:
        peer.start()
    assert "was not ready after 0 s" in failure.value.reason
    assert peer.process is None and peer.tmp is None
    assert _processes_with_argument(f"--port={peer.port}") == []


def _processes_with_argument(argument: str) -> list[int]:
    """PIDs of live processes with ``argument`` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and argument.encode() in args and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_prefect_settings_point_at_the_test_server(prefect_server: PrefectServer) -> None:
    assert PREFECT_API_URL.value() == prefect_server.api_url
    with prefect.get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_server.api_url
        assert client.api_healthcheck() is None


async def test_prefect_client_creates_and_reads_a_flow(prefect_server: PrefectServer) -> None:
    name = f"testbed-probe-{uuid.uuid4().hex[:8]}"
    async with prefect.get_client() as client:
        assert str(client.api_url).rstrip("/") == prefect_server.api_url
        flow_id = await client.create_flow_from_name(name)
        flow = await client.read_flow(flow_id)
    assert flow.name == name
    # The same flow is visible through the raw HTTP API: the client really used our server.
    response = httpx.get(f"{prefect_server.api_url}/flows/{flow_id}", timeout=5)
    assert response.status_code == 200 and response.json()["name"] == name


async def test_worker_created_and_polls_the_sms_pool(prefect_worker: PrefectWorker) -> None:
    async with prefect.get_client() as client:
        pool = await client.read_work_pool("sms")
        workers = await client.read_workers_for_work_pool("sms")
    # the session's Prefect server has one "sms" pool: whichever worker reached it first created it
    # (this process worker, or an sms worker an earlier test started), and both poll it
    assert (pool.name, pool.type) in {("sms", "process"), ("sms", "sms")}
    assert prefect_worker.worker_name in {worker.name for worker in workers}
    assert prefect_worker.pid is not None and is_alive(prefect_worker.pid)


def test_a_network_namespace_is_removed_with_its_sshd_and_leftovers_of_dead_sessions_too() -> None:
    """A namespaced sshd answers on its own address until cut off; stop removes its namespace and
    pair; a namespace left by a session whose process is gone is removed when the next is made."""
    from infra.testbed import netns

    dead_pid = 4_194_303  # above the default pid_max: no such process
    assert not is_alive(dead_pid)
    leftover = f"{netns.PREFIX}{dead_pid}-0"
    netns.run(["ip", "netns", "add", leftover])
    with SshServer(own_network=True) as ssh:
        network = ssh.network
        assert network is not None and ssh.host == network.address
        assert leftover not in netns.run(["ip", "netns", "list"]), "the dead session's namespace was kept"
        socket.create_connection((ssh.host, ssh.port), timeout=2).close()
        network.cut()
        with pytest.raises(TimeoutError):
            socket.create_connection((ssh.host, ssh.port), timeout=1)
        network.restore()
        socket.create_connection((ssh.host, ssh.port), timeout=2).close()
    names, links = netns.run(["ip", "netns", "list"]), netns.run(["ip", "-o", "link"])
    assert network.name not in names and network.outer not in links
