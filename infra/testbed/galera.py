"""A three-node MariaDB Galera cluster on loopback ports (Debian's ``mariadb-server`` and ``galera-4``)."""

from __future__ import annotations

import glob
from concurrent.futures import ThreadPoolExecutor
import os
import pwd

import pymysql

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, PeerError, find_binary, run

CLUSTER_NAME = "sms-test"
#: As root, the nodes run as this account (Debian's mariadb-server creates it).
SERVICE_USER = "mysql"


def galera_provider() -> str:
    """The Galera library of Debian's ``galera-4`` package."""
    found = glob.glob("/usr/lib/galera/libgalera_smm.so") + glob.glob("/usr/lib/*/galera*/libgalera_smm.so")
    if not found:
        raise PeerError("libgalera_smm.so not found (Debian package galera-4)")
    return found[0]


class GaleraNode(Peer):
    """One ``mariadbd`` with wsrep on: its SQL port ``port``, its group port ``group_port``.

    The first node of a cluster is started with ``bootstrap=True`` (``--wsrep-new-cluster``); the
    others join it and receive its data by rsync (SST). ``halt()`` kills the node (its data stays)
    and ``resume()`` makes it rejoin the cluster."""

    name = "galera"

    def __init__(self, index: int, *, timeout: float = 120.0) -> None:
        super().__init__(timeout=timeout, grace=5.0)
        self.index = index
        self.port = free_port()
        self.group_port = free_port()
        self.ist_port = free_port()
        self.sst_port = free_port()
        self.members: list[GaleraNode] = []
        self.bootstrap = False

    def _start(self) -> None:
        assert self.tmp is not None
        run_dir = self.tmp / "run"
        run_dir.mkdir()
        if os.getuid() == 0:
            # The joiner's rsync daemon (state transfer) would drop root for "nobody": the node runs as
            # Debian's "mysql" account instead, which passes through the peer's folder and owns the rest.
            account = pwd.getpwnam(SERVICE_USER)
            os.chmod(self.tmp, 0o711)
            os.chown(run_dir, account.pw_uid, account.pw_gid)
        run(
            [
                find_binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.tmp / 'data'}",
                "--auth-root-authentication-method=normal", f"--user={self._os_user()}", "--skip-test-db",
                f"--tmpdir={run_dir}",  # its temporary tables in a private folder, not the shared /tmp
            ]
        )
        self.resume()
        self.bootstrap = False  # a restart joins the running cluster

    @staticmethod
    def _os_user() -> str:
        return SERVICE_USER if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name

    def resume(self) -> None:
        """Start (or restart) this node; returns once it is Synced with the cluster."""
        assert self.tmp is not None
        peers = ",".join(f"{self.host}:{node.group_port}" for node in self.members)
        options = f"gmcast.listen_addr=tcp://{self.host}:{self.group_port};ist.recv_addr={self.host}:{self.ist_port};gcache.size=32M"
        argv = [
            find_binary("mariadbd"), "--no-defaults", f"--datadir={self.tmp / 'data'}",
            f"--socket={self.tmp / 'run' / 'mariadb.sock'}", f"--port={self.port}", f"--bind-address={self.host}",
            f"--user={self._os_user()}", "--skip-name-resolve", f"--pid-file={self.tmp / 'run' / 'mariadb.pid'}",
            "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
            "--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2",
            "--wsrep-on=ON", f"--wsrep-provider={galera_provider()}", f"--wsrep-cluster-name={CLUSTER_NAME}",
            f"--wsrep-cluster-address=gcomm://{peers}", f"--wsrep-node-name=node{self.index}",
            f"--wsrep-node-address={self.host}:{self.group_port}", f"--wsrep-provider-options={options}",
            f"--wsrep-sst-receive-address={self.host}:{self.sst_port}", "--wsrep-sst-method=rsync",
            *(["--wsrep-new-cluster"] if self.bootstrap else []),
        ]
        self.spawn(argv, self.synced)

    def synced(self) -> bool:
        """True when the node answers and is Synced with a primary component."""
        connection = pymysql.connect(host=self.host, port=self.port, user="root", connect_timeout=2)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_ready')")
                status = dict(cursor.fetchall())
        finally:
            connection.close()
        return status.get("wsrep_local_state_comment") == "Synced" and status.get("wsrep_ready") == "ON"


class GaleraCluster:
    """Three (``size``) Galera nodes; ``nodes[0]`` bootstraps, the others join one after the other.

    Example::

        with GaleraCluster() as cluster:
            cluster.create_database("sms")
            cluster.nodes[1].port  # any node takes reads and writes
    """

    def __init__(self, size: int = 3) -> None:
        self.nodes = [GaleraNode(index) for index in range(size)]
        for node in self.nodes:
            node.members = self.nodes
        self.nodes[0].bootstrap = True

    def start(self) -> GaleraCluster:
        """The first node bootstraps; the others then join at the same time (each by state transfer)."""
        try:
            self.nodes[0].start()
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                for joined in [pool.submit(node.start) for node in self.nodes[1:]]:
                    joined.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def create_database(self, database: str, user: str = "sms", password: str = "sms-galera-pw") -> None:
        """The database and an account allowed from loopback (replicated to every node)."""
        node = self.nodes[0]
        connection = pymysql.connect(host=node.host, port=node.port, user="root", connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
                cursor.execute("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
                cursor.execute(f"GRANT ALL ON `{database}`.* TO %s@'127.0.0.1'", (user,))
                cursor.execute("CREATE USER IF NOT EXISTS 'haproxy_check'@'127.0.0.1'")
        finally:
            connection.close()

    def __enter__(self) -> GaleraCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
