"""SMS's high-availability topology on loopback: every service replicated behind HAProxy.

- PostgreSQL and Redis under Prefect: two API processes (``--no-services``) and one
  background-services process, Prefect's Redis messaging (``prefect-redis``) between them;
- the catalog on a three-node MariaDB Galera cluster;
- HAProxy in front of the API processes (HTTP), the Galera nodes (TCP) and the gateways (HTTPS,
  TLS ends there, health checks on ``/readyz``);
- two ``sms gateway`` processes sharing the catalog and the session secret (when an OIDC issuer is
  given), and two ``sms`` workers on the pool, talking to Prefect through HAProxy;
- optional (``add_elasticsearch``, ``add_kafka``, or ``elasticsearch=``/``kafka=`` at start):
  Elasticsearch as a three-node cluster (each log index with one replica) with ``sms log-shipper``,
  the workers shipping script output to every node's URL; Kafka as three brokers (replication
  factor 3, ``min.insync.replicas=2``) with ``sms events`` publishing the catalog's outbox and
  Prefect's run events to all three.
- on request (``add_monitoring``), Prometheus as an identical pair, each with its own ``sms
  exporter`` following Prefect.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from infra.ha.haproxy_config import balancer_config, catalog_config
from infra.testbed.elasticsearch import ElasticsearchCluster
from infra.testbed.exporter import ExporterProcess
from infra.testbed.galera import GaleraCluster
from infra.testbed.gateway import GatewayBed
from infra.testbed.haproxy import HAProxy
from infra.testbed.kafka import KafkaCluster
from infra.testbed.ports import free_port
from infra.testbed.postgresql import PostgreSQL
from infra.testbed.prefect_server import POSTGRESQL_POOL, PrefectServer, PrefectServices, prefect_env, venv_binary
from infra.testbed.prefect_worker import PrefectWorker
from infra.testbed.process import PeerError
from infra.testbed.prometheus import Prometheus
from infra.testbed.redis import Redis
from infra.testbed.sms_services import EventsPublisher, LogShipper
from infra.testbed.tls import make_ca_and_server

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "rules" / "sms.rules.yml"
EXPORTER_JOB = "sms-exporter"
CATALOG_DATABASE = "sms"
CATALOG_PASSWORD = "sms-galera-pw"


def redis_messaging(redis: Redis) -> dict[str, str]:
    """Prefect's settings for Redis messaging, causal ordering, lease storage and Docket."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": redis.host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis.port),
        "PREFECT_REDIS_MESSAGING_DB": "0",
        "PREFECT_SERVER_DOCKET_URL": redis.url(1),
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    }


class HATopology:
    """Starts (``start()``) and stops (``stop()``) the whole topology; its parts stay reachable as
    attributes for drills (``apis``, ``workers``, ``gateways``, ``galera``, ``redis``,
    ``elasticsearch``, ``kafka``...).

    Example::

        with HATopology(issuer=keycloak.issuer, pool="sms") as ha:
            ha.prefect_api_url, ha.catalog_url, ha.gateway_url
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        pool: str = "sms",
        api_count: int = 2,
        worker_count: int = 2,
        gateway_count: int = 2,
        worker_env: Mapping[str, str] | None = None,
        elasticsearch: bool = False,
        kafka: bool = False,
    ) -> None:
        """``issuer``: the OIDC issuer the gateways trust (None: no gateways); ``worker_env``: more
        settings for the workers (e.g. ``SMS_HOME``); ``elasticsearch``, ``kafka``: start those
        clusters too (drills add them later with :meth:`add_elasticsearch`, :meth:`add_kafka`)."""
        self.issuer = issuer
        self.pool = pool
        self.api_count, self.worker_count, self.gateway_count = api_count, worker_count, gateway_count
        self.worker_env = dict(worker_env or {})
        self.with_elasticsearch, self.with_kafka = elasticsearch, kafka
        self.auth_string = secrets.token_urlsafe(24)
        self.session_secret = secrets.token_urlsafe(32)
        self.tmp = Path(tempfile.mkdtemp(prefix="sms-ha-"))
        self.gateway_port, self.prefect_port, self.catalog_port = free_port(), free_port(), free_port()
        self.postgresql = PostgreSQL()
        self.redis = Redis()
        self.galera = GaleraCluster()
        self.apis: list[PrefectServer] = []
        self.services: PrefectServices | None = None
        self.gateways: list[GatewayBed] = []
        self.workers: list[PrefectWorker] = []
        self.exporters: list[ExporterProcess] = []
        self.prometheus: list[Prometheus] = []
        self.haproxy: HAProxy | None = None
        self.catalog_proxy: HAProxy | None = None
        self.ca_path: Path | None = None
        self.elasticsearch: ElasticsearchCluster | None = None
        self.log_shipper: LogShipper | None = None
        self.kafka: KafkaCluster | None = None
        self.publisher: EventsPublisher | None = None

    @property
    def api_url(self) -> str:
        """Prefect's API through HAProxy (as a Prefect server peer names it)."""
        return self.prefect_api_url

    @property
    def prefect_url(self) -> str:
        """Prefect through HAProxy, without its base path (what the gateways proxy to)."""
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/prefect/api"

    @property
    def catalog_url(self) -> str:
        return f"mysql+pymysql://sms:{CATALOG_PASSWORD}@127.0.0.1:{self.catalog_port}/{CATALOG_DATABASE}"

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.gateway_port}"

    def client_env(self) -> dict[str, str]:
        """What a process needs to use this topology: Prefect's API and auth string, the catalog,
        and Prefect's client retrying 500 too (what the API answers while PostgreSQL restarts)."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": self.auth_string,
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
            "SMS_DATABASE_URL": self.catalog_url,
            "SMS_WORK_POOL": self.pool,
            "SMS_LOST_RUN_SECONDS": "90",  # drill 4 waits 90 s for the runs of its dead worker, not 300
        }

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.postgresql.start()
        self.redis.start()
        self.galera.start()
        self.galera.create_database(CATALOG_DATABASE, password=CATALOG_PASSWORD)
        messaging = redis_messaging(self.redis)
        self._migrate_prefect(messaging)
        for _ in range(self.api_count):
            api = PrefectServer(
                database_url=self.postgresql.prefect_url, base_path="/prefect", auth_string=self.auth_string,
                services=False, extra_env=messaging,
            )
            self.apis.append(api.start())
        self.services = PrefectServices(self.postgresql.prefect_url, messaging).start()
        self.catalog_proxy = HAProxy(
            catalog_config(catalog_port=self.catalog_port, galera_nodes=[node.port for node in self.galera.nodes]),
            self.tmp / "catalog-proxy",
        )
        self.catalog_proxy.start()
        self._start_balancer([])
        self._migrate_catalog()
        if self.issuer:
            self.add_gateways(self.issuer)
        self._create_pool()
        if self.with_elasticsearch:
            self.add_elasticsearch()
        if self.with_kafka:
            self.add_kafka()
        for _ in range(self.worker_count):
            worker = PrefectWorker(
                self.prefect_api_url, pool=self.pool, worker_type="sms", limit=200,
                extra_env={**self.client_env(), **self.worker_env},
            )
            self.workers.append(worker.start())

    def add_elasticsearch(self, size: int = 3) -> None:
        """Start an Elasticsearch cluster of ``size`` nodes and ``sms log-shipper``; the workers
        (restarted if running) ship script output to every node (``SMS_ELASTICSEARCH_URL``, a
        comma-separated list: the client fails over to another node)."""
        self.elasticsearch = ElasticsearchCluster(size).start()
        self.worker_env["SMS_ELASTICSEARCH_URL"] = self.elasticsearch.urls
        self.log_shipper = LogShipper(self.elasticsearch.urls, extra_env={**self.client_env(), **self.worker_env})
        self.log_shipper.start()
        for worker in self.workers:
            worker.stop()
            worker.extra_env.update(self.worker_env)
            worker.start()

    def add_kafka(self, size: int = 3) -> None:
        """Start ``size`` Kafka brokers and ``sms events`` publishing to all of them. The workers
        need no restart: they write run events to Prefect and the catalog's outbox, which the
        publisher sends."""
        self.kafka = KafkaCluster(size).start()
        self.publisher = EventsPublisher(self.prefect_api_url, self.kafka.bootstrap, extra_env=self.client_env())
        self.publisher.start()

    def _migrate_prefect(self, messaging: Mapping[str, str]) -> None:
        """``prefect server database upgrade -y`` once, before any API process starts."""
        env = prefect_env(
            self.tmp / "prefect-home",
            {**messaging, **POSTGRESQL_POOL, "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgresql.prefect_url},
        )
        done = subprocess.run(
            [venv_binary("prefect"), "server", "database", "upgrade", "-y"],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )
        if done.returncode != 0:
            raise PeerError("prefect server database upgrade failed", (done.stdout + done.stderr)[-3000:])

    def add_gateways(self, issuer: str) -> None:
        """Start the gateways trusting ``issuer`` and put them behind the balancer (restarted with
        their HTTPS frontend). The topology starts them itself when it was given an issuer."""
        self.issuer = issuer
        ports = [free_port() for _ in range(self.gateway_count)]
        for port in ports:
            self.gateways.append(self._gateway(port).start())
        self._start_balancer(ports)

    def _start_balancer(self, gateway_ports: list[int]) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        tls = self.tmp / "tls"
        tls.mkdir(exist_ok=True)
        self.ca_path, cert, key = make_ca_and_server(tls, "127.0.0.1", "SMS HA")
        pem = tls / "gateway.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        pem.chmod(0o600)
        config = balancer_config(
            prefect_port=self.prefect_port, prefect_apis=[api.port for api in self.apis],
            gateway_port=self.gateway_port, gateway_pem=pem, gateways=gateway_ports,
        )
        self.haproxy = HAProxy(config, self.tmp / "haproxy")
        self.haproxy.start()

    def _migrate_catalog(self) -> None:
        from sms_plugin.catalog import Catalog

        catalog = Catalog(self.catalog_url)
        try:
            catalog.upgrade()
        finally:
            catalog.dispose()

    def _gateway(self, port: int) -> GatewayBed:
        assert self.issuer is not None
        settings = {
            **self.client_env(),
            "SMS_GATEWAY_PREFECT_URL": self.prefect_url,
            "SMS_GATEWAY_PREFECT_AUTH_STRING": self.auth_string,
            "SMS_GATEWAY_SESSION_SECRET": self.session_secret,
            "SMS_GATEWAY_PUBLIC_URL": self.gateway_url,
        }
        gateway = GatewayBed(self.issuer, with_prefect=False, settings=settings)
        gateway.port = port
        return gateway

    def add_monitoring(self, count: int = 2) -> None:
        """Start ``count`` monitoring stacks: each an exporter following Prefect through HAProxy and
        a Prometheus of the same configuration (SMS's rules) scraping that exporter (job
        ``sms-exporter``). Each exporter counts every run from Prefect, so each Prometheus holds the
        whole picture, and no query sees a run twice."""
        env = {key: value for key, value in self.client_env().items() if key.startswith("PREFECT_")}
        for _ in range(count):
            exporter = ExporterProcess(self.prefect_api_url, free_port(), **env).start()
            self.exporters.append(exporter)
            prometheus = Prometheus(rule_files=[RULES]).start()
            prometheus.scrape(EXPORTER_JOB, [exporter.target])
            self.prometheus.append(prometheus)

    def _create_pool(self) -> None:
        env = prefect_env(self.tmp / "prefect-home", self.client_env())
        done = subprocess.run(
            [venv_binary("prefect"), "work-pool", "create", self.pool, "--type", "sms", "--overwrite"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0:
            raise PeerError(f"could not create work pool {self.pool}", (done.stdout + done.stderr)[-3000:])

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice."""
        for peer in [*self.prometheus, *self.exporters, *self.workers, *self.gateways, self.publisher, self.log_shipper]:
            if peer is not None:
                peer.stop()
        self.prometheus, self.exporters, self.workers, self.gateways = [], [], [], []
        self.publisher = self.log_shipper = None
        for cluster in (self.kafka, self.elasticsearch):
            if cluster is not None:
                cluster.stop()
        self.kafka = self.elasticsearch = None
        for proxy in (self.haproxy, self.catalog_proxy):
            if proxy is not None:
                proxy.stop()
        self.haproxy = self.catalog_proxy = None
        if self.services is not None:
            self.services.stop()
            self.services = None
        for api in self.apis:
            api.stop()
        self.apis = []
        self.galera.stop()
        self.redis.stop()
        self.postgresql.stop()
        if os.environ.get("SMS_TESTBED_KEEP") != "1":
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
