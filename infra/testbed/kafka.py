"""Private Apache Kafka brokers (KRaft mode, no ZooKeeper) on loopback, from Maven Central.

The broker is the jar ``org.apache.kafka:kafka_2.13`` and its runtime dependencies, resolved by
Maven from a throwaway pom (``mvn dependency:copy-dependencies``) into the test-bed cache
(``cache_dir()/kafka-<version>/lib``, outside the clone; once per machine). Each broker gets its own
data folder, ``server.properties`` and free ports, and runs on the machine's Java 17+ with a
512 MB heap. :class:`Kafka` is one combined broker/controller; :class:`KafkaCluster` is three
nodes, each broker and controller, with replication factor 3 and ``min.insync.replicas=2``.

With :class:`KafkaTLS` every node also listens for ``SASL_SSL`` (SCRAM-SHA-512): its keystore and
truststore are the test CA's PEM files (Kafka reads PEM stores), and the SCRAM users are created
when the storage is formatted (``--add-scram``); ``bootstrap`` stays the plain loopback listener.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from infra.testbed.elasticsearch import cache_dir
from infra.testbed.ports import LOOPBACK, free_port
from infra.testbed.process import Cluster, ClusterNode, ManagedProcess, PeerError, find_binary, run

VERSION = "4.4.0"
SCALA = "2.13"
#: Kafka logs through SLF4J; reload4j is the binding its own distribution ships.
LOGGING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>sms.testbed</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{version}</version></dependency>
    <dependency><groupId>{log_group}</groupId><artifactId>{log_artifact}</artifactId><version>{log_version}</version></dependency>
  </dependencies>
</project>
"""
LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def broker_jars(version: str = VERSION) -> Path:
    """The folder of the broker's jars, resolved with Maven on first use (concurrent callers race
    safely by rename). A missing artifact raises :class:`PeerError` naming it."""
    lib = cache_dir() / f"kafka-{version}" / "lib"
    if lib.is_dir() and any(lib.glob(f"kafka_{SCALA}-{version}.jar")):
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="resolve-", dir=lib.parent))
    try:
        (staging / "pom.xml").write_text(POM.format(
            scala=SCALA, version=version, log_group=LOGGING[0], log_artifact=LOGGING[1], log_version=LOGGING[2]))
        try:
            run(["mvn", "-q", "-B", "-f", str(staging / "pom.xml"), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'lib'}"], timeout=900)
        except PeerError as error:
            raise PeerError(
                f"Maven could not resolve org.apache.kafka:kafka_{SCALA}:{version} and its dependencies "
                "(run infra/bootstrap.sh on a machine that reaches Maven Central)", error.log_tail) from error
        if not any((staging / "lib").glob(f"kafka_{SCALA}-{version}.jar")):
            raise PeerError(f"mvn did not produce kafka_{SCALA}-{version}.jar")
        try:
            (staging / "lib").rename(lib)
        except OSError:  # another session resolved it first
            if not lib.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return lib


def _java() -> str:
    java_home = os.environ.get("SMS_TESTBED_JAVA_HOME")
    return find_binary(str(Path(java_home) / "bin" / "java") if java_home else "java")


@dataclass(frozen=True)
class KafkaTLS:
    """A ``SASL_SSL`` listener: the server's PEM certificate and key, the CA, SCRAM users."""

    ca: Path
    certificate: Path
    key: Path
    users: dict[str, str] = field(default_factory=dict)
    """SCRAM-SHA-512 user name → password."""

    def properties(self, folder: Path) -> list[str]:
        keystore = folder / "keystore.pem"  # Kafka's PEM keystore: the private key, then the chain
        keystore.write_bytes(self.key.read_bytes() + self.certificate.read_bytes())
        return [
            "ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]

    def scram_arguments(self) -> list[str]:
        return [argument for name, password in self.users.items()
                for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]


def _accepts(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1):
        return True


class KafkaNode(ClusterNode):
    """One KRaft node (broker and controller) of a quorum given by ``voters``; ``halt``/``resume``
    keep its data folder and ports (a broker outage)."""

    name = "kafka"

    def __init__(self, node_id: int, port: int, controller_port: int, voters: str, cluster_id: str,
                 replication: int, *, heap_mb: int = 512, timeout: float = 180.0,
                 tls: KafkaTLS | None = None) -> None:
        super().__init__(timeout=timeout, grace=20.0)
        self.node_id, self.port, self.controller_port = node_id, port, controller_port
        self.tls = tls
        self.tls_port = free_port() if tls else 0
        self.voters, self.cluster_id, self.replication, self.heap_mb = voters, cluster_id, replication, heap_mb
        self._argv: list[str] = []

    def _start(self) -> None:
        assert self.tmp is not None
        lib = broker_jars()
        properties = self.tmp / "server.properties"
        min_isr = 2 if self.replication >= 3 else 1
        secure = f",SASL_SSL://{LOOPBACK}:{self.tls_port}" if self.tls else ""
        properties.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters}",
            f"listeners=PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}{secure}",
            f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{self.port}{secure}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            *(self.tls.properties(self.tmp) if self.tls else []),
            f"log.dirs={self.tmp / 'data'}",
            "num.partitions=3",
            f"default.replication.factor={self.replication}",
            f"offsets.topic.replication.factor={self.replication}",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={self.replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            f"min.insync.replicas={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]))
        (self.tmp / "log4j.properties").write_text(LOG4J)
        classpath = f"{lib}/*"
        run([_java(), "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
             "-c", str(properties), *(self.tls.scram_arguments() if self.tls else [])], timeout=120)
        self._argv = [_java(), f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC",
                      f"-Dlog4j.configuration=file:{self.tmp / 'log4j.properties'}",
                      "-cp", classpath, "kafka.Kafka", str(properties)]
        self.launch()

    def launch(self) -> None:
        """Spawn the broker without waiting: a node of a quorum listens only once a majority runs."""
        assert self.tmp is not None
        self.process = ManagedProcess(self._argv, self.log_path, cwd=self.tmp)
        self.process.start()

    def wait_ready(self) -> None:
        """Block until the broker accepts connections (:class:`PeerError` on exit or timeout)."""
        assert self.process is not None, "start() first"
        self.process.wait_ready(lambda: _accepts(self.port), self.timeout, f"kafka node {self.node_id}")

    def resume(self) -> None:
        """Start the broker again on the same data and ports; waits until it listens."""
        assert self.tmp is not None and self.process is None, "halt() first"
        self.launch()
        self.wait_ready()


def _cluster_id() -> str:
    return run([_java(), "-cp", f"{broker_jars()}/*", "kafka.tools.StorageTool", "random-uuid"]).strip()


class KafkaCluster(Cluster):
    """``size`` KRaft nodes on loopback forming one cluster; ``bootstrap`` lists every broker.

    Example::

        with KafkaCluster(size=3) as cluster:
            Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    """

    nodes: list[KafkaNode]

    def __init__(self, size: int = 1, *, timeout: float = 180.0, tls: KafkaTLS | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        super().__init__()
        self.size, self.timeout, self.tls = size, timeout, tls

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` of the cluster, e.g. ``127.0.0.1:P1,127.0.0.1:P2``."""
        return ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes)

    @property
    def tls_bootstrap(self) -> str:
        """``bootstrap.servers`` of the ``SASL_SSL`` listeners (with :class:`KafkaTLS`)."""
        return ",".join(f"{LOOPBACK}:{node.tls_port}" for node in self.nodes)

    def start(self) -> KafkaCluster:
        """Format and start every node; a quorum forms once a majority listens."""
        began = time.monotonic()
        cluster_id = _cluster_id()
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        voters = ",".join(f"{index + 1}@{LOOPBACK}:{controller}" for index, (_, controller) in enumerate(ports))
        replication = 3 if self.size >= 3 else 1
        self._start_nodes([KafkaNode(index + 1, port, controller, voters, cluster_id, replication,
                                     timeout=self.timeout, tls=self.tls)
                           for index, (port, controller) in enumerate(ports)], began)
        return self

    def halt(self) -> None:
        """Stop every broker at once, keeping their data (a whole-cluster outage). One by one, the
        last of a quorum would wait out its grace period: its controlled shutdown needs the others."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(KafkaNode.halt, self.nodes))

    def resume(self) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
