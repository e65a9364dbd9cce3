"""A private Elasticsearch on loopback, one node or a cluster, from its official Maven artifact.

The artifact ``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip`` is
fetched with ``mvn dependency:get`` into ``~/.m2`` (once per machine) and unpacked once into the
test-bed cache (:func:`cache_dir`). Each peer gets its own config, data and log folders, free HTTP
and transport ports, security off and a 512 MB heap. :class:`ElasticsearchCluster` starts
several nodes that find each other through their transport ports (drill 10 of the HA topology). Elasticsearch 9 needs Java 21 or newer: the
newest JDK under ``/usr/lib/jvm`` is used unless ``SMS_ES_JAVA_HOME`` names one.

Elasticsearch refuses to run as root. As root, the peer runs it as the unprivileged system user
``sms-testbed`` (created on first use) through ``setpriv``; the cache then lives in
``/var/cache/sms-testbed`` because that user cannot enter ``/root``.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.testbed.ports import LOOPBACK, free_port
from infra.testbed.process import Cluster, ClusterNode, ManagedProcess, PeerError, find_binary, run

VERSION = "9.2.0"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{VERSION}:zip"
SERVICE_USER = "sms-testbed"
MIN_JAVA = 21


def cache_dir() -> Path:
    """Where unpacked test-bed artifacts live (outside the clone); ``SMS_TESTBED_CACHE`` overrides."""
    if configured := os.environ.get("SMS_TESTBED_CACHE"):
        return Path(configured)
    if os.getuid() == 0:
        return Path("/var/cache/sms-testbed")
    return Path.home() / ".cache" / "sms-testbed"


def artifact_zip(version: str = VERSION) -> Path:
    """The distribution zip in the local Maven repository, fetched with ``mvn`` if missing."""
    local = Path.home() / ".m2/repository/org/elasticsearch/distribution/integ-test-zip/elasticsearch"
    path = local / version / f"elasticsearch-{version}.zip"
    if not path.is_file():
        run(["mvn", "-q", "dependency:get", f"-Dartifact={ARTIFACT.replace(VERSION, version)}",
             "-Dtransitive=false"], timeout=900)
    if not path.is_file():
        raise PeerError(f"mvn dependency:get did not produce {path}")
    return path


def install(version: str = VERSION) -> Path:
    """The unpacked distribution (unpacked once; concurrent sessions race safely by rename)."""
    home = cache_dir() / f"elasticsearch-{version}"
    if (home / "bin" / "elasticsearch").is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    home.parent.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=home.parent))
    try:
        with zipfile.ZipFile(artifact_zip(version)) as archive:
            for member in archive.infolist():
                target = Path(archive.extract(member, staging))
                mode = (member.external_attr >> 16) & 0o777 or 0o644
                target.chmod(mode | (0o555 if member.is_dir() else 0o444))  # readable by SERVICE_USER
        staging.chmod(0o755)
        try:
            (staging / f"elasticsearch-{version}").rename(home)
        except OSError:  # another session unpacked it first
            if not (home / "bin" / "elasticsearch").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def java_home() -> Path:
    """A JDK of version MIN_JAVA or newer: ``SMS_ES_JAVA_HOME``, else the newest in /usr/lib/jvm."""
    if configured := os.environ.get("SMS_ES_JAVA_HOME"):
        return Path(configured)
    candidates = []
    for jdk in Path("/usr/lib/jvm").glob("*"):
        found = re.search(r"(\d+)", jdk.name)
        if found and int(found.group(1)) >= MIN_JAVA and (jdk / "bin" / "java").is_file():
            candidates.append((int(found.group(1)), jdk))
    if not candidates:
        raise PeerError(
            f"Elasticsearch {VERSION} needs Java {MIN_JAVA}+; none in /usr/lib/jvm "
            "(install one, or set SMS_ES_JAVA_HOME)"
        )
    return max(candidates)[1]


def _service_user() -> pwd.struct_passwd:
    """The unprivileged user Elasticsearch runs as when we are root (created if missing)."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=False)  # a concurrent session may have created it
        return pwd.getpwnam(SERVICE_USER)


class Elasticsearch(ClusterNode):
    """Elasticsearch with security off; :meth:`halt` and :meth:`resume` keep its data. A single
    node by default; a member of an :class:`ElasticsearchCluster` when given ``cluster``.

    Example::

        with Elasticsearch() as es:
            httpx.get(es.url).json()["version"]["number"]   # "9.2.0"
    """

    name = "elasticsearch"

    def __init__(
        self, *, version: str = VERSION, heap_mb: int = 512, timeout: float = 180.0,
        cluster: ClusterSeat | None = None,
    ) -> None:
        super().__init__(timeout=timeout, grace=30.0)
        self.version = version
        self.heap_mb = heap_mb
        self.cluster = cluster
        self.port = cluster.port if cluster else 0
        self.transport_port = cluster.transport_port if cluster else 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start(self) -> None:
        assert self.tmp is not None
        home = install(self.version)
        jdk = java_home()
        if self.cluster is None:
            self.port, self.transport_port = free_port(), free_port()
        config = self.tmp / "config"
        shutil.copytree(home / "config", config)
        self._write_config(bootstrap=True)
        for folder in ("data", "logs", "es-tmp"):
            (self.tmp / folder).mkdir()
        self._env = {
            **os.environ,
            "ES_JAVA_HOME": str(jdk),
            "ES_PATH_CONF": str(config),
            "ES_TMPDIR": str(self.tmp / "es-tmp"),
            "ES_JAVA_OPTS": f"-Xms{self.heap_mb}m -Xmx{self.heap_mb}m",
        }
        self._argv = [str(home / "bin" / "elasticsearch")]
        if os.getuid() == 0:
            user = _service_user()
            self.tmp.chmod(0o711)
            for path in [self.tmp / name for name in ("config", "data", "logs", "es-tmp")]:
                _chown_tree(path, user.pw_uid, user.pw_gid)
            self._env["HOME"] = str(self.tmp / "es-tmp")
            self._argv = [find_binary("setpriv"), f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                          "--clear-groups", *self._argv]
        if self.cluster is None:
            self.spawn(self._argv, self._healthy, env=self._env)
        else:  # a cluster answers only once a majority of its nodes runs: the cluster waits for them
            self.launch()

    def _write_config(self, *, bootstrap: bool) -> None:
        """``elasticsearch.yml``: one node, or a cluster member (``bootstrap``: the first start of
        the cluster names its initial master nodes; a restarted member must not)."""
        assert self.tmp is not None
        if self.cluster is None:
            discovery = ["cluster.name: sms-testbed", "node.name: sms-testbed-node", "discovery.type: single-node"]
        else:
            discovery = [
                f"cluster.name: {self.cluster.cluster_name}",
                f"node.name: {self.cluster.node_name}",
                f"discovery.seed_hosts: [{', '.join(self.cluster.seed_hosts)}]",
                *([f"cluster.initial_master_nodes: [{', '.join(self.cluster.masters)}]"] if bootstrap else []),
            ]
        (self.tmp / "config" / "elasticsearch.yml").write_text(
            "\n".join(
                [
                    *discovery,
                    f"path.data: {self.tmp / 'data'}",
                    f"path.logs: {self.tmp / 'logs'}",
                    f"network.host: {self.host}",
                    f"http.port: {self.port}",
                    f"transport.port: {self.transport_port}",
                    "xpack.security.enabled: false",
                    # The test bed shares a disk with everything else: never go read-only.
                    "cluster.routing.allocation.disk.threshold_enabled: false",
                    "",
                ]
            )
        )

    def launch(self) -> None:
        """Spawn the node without waiting until it answers."""
        assert self.tmp is not None
        self.process = ManagedProcess(self._argv, self.log_path, env=self._env, cwd=self.tmp)
        self.process.start()

    def wait_ready(self) -> None:
        """Block until the node answers with the cluster at least yellow (:class:`PeerError` on
        exit or timeout)."""
        assert self.process is not None, "start() first"
        self.process.wait_ready(self._healthy, self.timeout, f"elasticsearch {self.url}")

    def _healthy(self) -> bool:
        response = httpx.get(f"{self.url}/_cluster/health", params={"wait_for_status": "yellow",
                                                                   "timeout": "1s"}, timeout=5)
        return response.status_code == 200

    def resume(self) -> None:
        """Start the server again on the same data folder and ports; waits until it is ready."""
        assert self.tmp is not None and self.process is None, "halt() first"
        if self.cluster is not None:
            self._write_config(bootstrap=False)
        self.spawn(self._argv, self._healthy, env=self._env)


@dataclass(frozen=True)
class ClusterSeat:
    """One member's place in a cluster: its name and ports, and the whole cluster's members."""

    cluster_name: str
    node_name: str
    port: int
    transport_port: int
    seed_hosts: tuple[str, ...]
    """Every member's transport address."""
    masters: tuple[str, ...]
    """Every member's node name (all are master-eligible)."""


class ElasticsearchCluster(Cluster):
    """``size`` Elasticsearch nodes on loopback forming one cluster (every node master-eligible and
    data); ``urls`` is every node's HTTP address, comma-separated as ``SMS_ELASTICSEARCH_URL``
    takes it. With three nodes one may stop: two keep the master quorum, and SMS's template gives
    each index one replica (``auto_expand_replicas: 0-1``).

    Example::

        with ElasticsearchCluster(3) as cluster:
            Elasticsearch(cluster.urls.split(","))
    """

    nodes: list[Elasticsearch]

    def __init__(self, size: int = 3, *, heap_mb: int = 512, timeout: float = 240.0) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        super().__init__()
        self.size, self.heap_mb, self.timeout = size, heap_mb, timeout

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> ElasticsearchCluster:
        """Start every node at once and wait until the cluster has formed."""
        began = time.monotonic()
        name = f"sms-testbed-{secrets.token_hex(3)}"
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        seeds = tuple(f"{LOOPBACK}:{transport}" for _, transport in ports)
        masters = tuple(f"{name}-{index + 1}" for index in range(self.size))
        self._start_nodes([
            Elasticsearch(heap_mb=self.heap_mb, timeout=self.timeout, cluster=ClusterSeat(
                name, masters[index], port, transport, seeds, masters))
            for index, (port, transport) in enumerate(ports)
        ], began)
        return self


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid)

