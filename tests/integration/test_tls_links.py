"""Every TLS link the seed names works with the CA of ``SMS_CA_BUNDLE`` and refuses a certificate of
another CA, with an error naming the link, and nothing written or sent then (docs/tls.md):
MariaDB (``require_secure_transport``), Kafka (SASL_SSL with SCRAM-SHA-512), Elasticsearch and
Prefect behind HAProxy's TLS, Keycloak over HTTPS, the exporter over HTTPS scraped by Prometheus
over HTTPS, which the gateway's monitoring API reads over HTTPS.

One TLS test bed per module: a trusted CA with one server certificate for 127.0.0.1 shared by the
peers started here, an untrusted second CA; Keycloak, Elasticsearch and Prefect are the session's.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pymysql
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text

from infra.testbed.haproxy import HAProxy
from infra.testbed.kafka import KafkaCluster, KafkaTLS
from infra.testbed.mariadb import MariaDB
from infra.testbed.ports import free_port
from infra.testbed.prefect_server import venv_binary
from infra.testbed.process import PeerError
from infra.testbed.prometheus import Prometheus
from infra.testbed.tls import make_ca_and_server
from infra.testbed.tls_proxy import Front, tls_fronts
from sms_plugin import hosts
from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import OutboxEvent, Script
from sms_plugin.events.kafka_security import KafkaSecurity
from sms_plugin.events.publisher import OutboxSender, PublisherSettings
from sms_plugin.telemetry.exporter import Exporter, ExporterSettings
from sms_plugin.telemetry.logs import elastic
from sms_plugin.telemetry.logs.documents import OutputSource, bulk_records
from sms_plugin.tls import CertificateRefused
from tests.integration.gateway_fixtures import serve

PUBLISHER, PASSWORD = "sms-publisher", "publisher-" + uuid.uuid4().hex
TOPIC = "sms.tls-test"


@dataclass(frozen=True)
class Pki:
    ca: Path
    certificate: Path
    key: Path
    other_ca: Path
    folder: Path

    def bundle(self, *cas: Path) -> Path:
        """One PEM bundle of ``cas`` (SMS_CA_BUNDLE names one file)."""
        path = self.folder / f"bundle-{uuid.uuid4().hex[:8]}.pem"
        path.write_bytes(b"".join(ca.read_bytes() for ca in cas))
        return path


def _started(peer):
    try:
        return peer.start()
    except PeerError as error:
        pytest.fail(f"{type(peer).__name__} could not be started: {error}", pytrace=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    trusted, other = tmp_path_factory.mktemp("trusted-ca"), tmp_path_factory.mktemp("other-ca")
    ca, certificate, key = make_ca_and_server(trusted, "127.0.0.1", "SMS TLS test")
    other_ca, _, _ = make_ca_and_server(other, "127.0.0.1", "SMS untrusted")
    return Pki(ca, certificate, key, other_ca, trusted)


@pytest.fixture(scope="module")
def tls_mariadb(pki) -> Iterator[MariaDB]:
    peer = _started(MariaDB(tls=(pki.ca, pki.certificate, pki.key)))
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def tls_kafka(pki) -> Iterator[KafkaCluster]:
    cluster = _started(KafkaCluster(1, tls=KafkaTLS(pki.ca, pki.certificate, pki.key, {PUBLISHER: PASSWORD})))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def fronts(pki, elasticsearch, prefect_server, tmp_path_factory) -> Iterator[dict[str, str]]:
    """HTTPS fronts (HAProxy) for the session's Elasticsearch and Prefect (served at its root)."""
    proxy: HAProxy
    try:
        proxy, urls = tls_fronts(
            [Front("elasticsearch", elasticsearch.port), Front("prefect", prefect_server.port, strip_prefix="/prefect")],
            pki.certificate, pki.key, tmp_path_factory.mktemp("haproxy"))
    except PeerError as error:
        pytest.fail(f"haproxy could not be started: {error}", pytrace=False)
    yield urls
    proxy.stop()


@pytest.fixture(scope="module")
def scraped_exporter(pki) -> Iterator[tuple[Prometheus, str]]:
    """The exporter over HTTPS, scraped by an HTTPS Prometheus as job ``exporter`` (trusting the CA)
    and as job ``untrusted`` (trusting only the other CA)."""
    settings = ExporterSettings(address="127.0.0.1", port=free_port(), tls_cert=str(pki.certificate),
                                tls_key=str(pki.key))
    target = f"127.0.0.1:{Exporter(settings).listen()}"
    untrusted = {"job_name": "untrusted", "scheme": "https", "tls_config": {"ca_file": str(pki.other_ca)},
                 "static_configs": [{"targets": [target]}]}
    prometheus = _started(Prometheus(tls=(pki.ca, pki.certificate, pki.key), scrape_configs=[untrusted]))
    prometheus.scrape("exporter", [target])
    yield prometheus, target
    prometheus.stop()


def trust(monkeypatch, bundle: Path) -> None:
    monkeypatch.setenv("SMS_CA_BUNDLE", str(bundle))


def test_the_catalog_requires_tls_and_verifies_mariadb(tls_mariadb, pki, monkeypatch):
    monkeypatch.setenv("SMS_DATABASE_TLS", "on")
    trust(monkeypatch, pki.other_ca)
    refused = Catalog(tls_mariadb.url)
    with pytest.raises(CertificateRefused, match=r"the catalog database at 127\.0\.0\.1:\d+: TLS certificate refused"):
        refused.upgrade()
    refused.dispose()

    trust(monkeypatch, pki.ca)
    catalog = Catalog(tls_mariadb.url)
    try:
        assert catalog.revision() is None  # the refused connection wrote nothing, not even the schema
        catalog.upgrade()
        with catalog.engine.connect() as connection:
            cipher = connection.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1]
        assert cipher, "the catalog's connection is not encrypted"
    finally:
        catalog.dispose()

    # The same user in clear text: MariaDB 10.11 under require_secure_transport answers "access denied".
    with pytest.raises(pymysql.OperationalError, match="Access denied"):
        pymysql.connect(host=tls_mariadb.host, port=tls_mariadb.port, user=tls_mariadb.user, ssl_disabled=True)


def outbox_rows(key: str, count: int) -> list[OutboxEvent]:
    now = datetime.now(UTC)
    return [OutboxEvent(position=index + 1, id=str(uuid.uuid4()), topic=TOPIC, key=key, type="sms.test.tls",
                        source="/sms/test", subject=key, time=now, data={"n": index}) for index in range(count)]


def security(kafka: KafkaCluster, password: str = PASSWORD) -> KafkaSecurity:
    return KafkaSecurity(kafka.tls_bootstrap, protocol="SASL_SSL", username=PUBLISHER, password=SecretStr(password))


def sender(kafka: KafkaCluster, password: str = PASSWORD, timeout: float = 10) -> OutboxSender:
    """A sender giving up after ``timeout`` s (long enough for the refusal to be reported first)."""
    return OutboxSender(PublisherSettings(bootstrap=kafka.tls_bootstrap, outbox_limit=100_000, send_timeout_seconds=timeout, metrics=None,
                                          security=security(kafka, password)))


def keys_in_topic(kafka: KafkaCluster, wanted: int, timeout: float = 20) -> list[str]:
    """The keys of the test topic's messages, read over SASL_SSL from the start of every partition."""
    consumer = Consumer({"bootstrap.servers": kafka.tls_bootstrap, "group.id": f"tls-{uuid.uuid4()}",
                         "enable.auto.commit": False, **security(kafka).client_config()})
    partitions = consumer.list_topics(TOPIC, timeout=timeout).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, partition, OFFSET_BEGINNING) for partition in partitions])
    keys: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(keys) < wanted:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                keys.append(message.key().decode())
    finally:
        consumer.close()
    return keys


def test_the_publisher_reaches_kafka_over_sasl_ssl_only_with_the_ca_and_its_password(
        tls_kafka, pki, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="sms.events")
    trust(monkeypatch, pki.other_ca)
    untrusted = sender(tls_kafka)
    assert untrusted.send(outbox_rows("untrusted", 2)) == 0
    assert f"Kafka at {tls_kafka.tls_bootstrap}: TLS certificate refused" in caplog.text
    assert PASSWORD not in caplog.text

    trust(monkeypatch, pki.ca)
    wrong_password = sender(tls_kafka, password="not-the-password")
    assert wrong_password.send(outbox_rows("wrong-password", 2)) == 0
    assert f"Kafka at {tls_kafka.tls_bootstrap} refused the connection" in caplog.text

    assert sender(tls_kafka, timeout=30).send(outbox_rows("trusted", 3)) == 3  # time for metadata, login, topic
    assert keys_in_topic(tls_kafka, wanted=3) == ["trusted"] * 3  # the refused sends reached nobody


def ship_one_line(run_id: str) -> None:
    source = OutputSource(run_id=run_id, attempt=1, script="tls-test", version=1, host="local")
    client = elastic.connect()
    elastic.ensure_template(client)
    assert elastic.send(client, bulk_records(source, "stdout", 1, time.time(), [f"line of {run_id}"]).encode()) == []


def lines_of(elasticsearch, run_id: str) -> int:
    """Documents of ``run_id``, counted over Elasticsearch's own plain HTTP (not through SMS)."""
    httpx.post(f"{elasticsearch.url}/sms-logs-*/_refresh", timeout=10)
    reply = httpx.post(f"{elasticsearch.url}/sms-logs-*/_count", timeout=10,
                       json={"query": {"term": {"sms.run_id": run_id}}})
    return int(reply.raise_for_status().json()["count"])


async def test_log_shipping_and_search_verify_elasticsearch_behind_its_tls_proxy(
        fronts, elasticsearch, pki, monkeypatch):
    from sms_plugin.telemetry.logs.reader import run_output

    monkeypatch.setenv("SMS_ELASTICSEARCH_URL", fronts["elasticsearch"])
    refused_run, shipped_run = str(uuid.uuid4()), str(uuid.uuid4())
    trust(monkeypatch, pki.other_ca)
    with pytest.raises(elastic.ShippingError, match=f"Elasticsearch at {fronts['elasticsearch']}: TLS certificate refused"):
        ship_one_line(refused_run)
    with pytest.raises(Exception, match="TLS certificate refused"):
        [entry async for entry in run_output(shipped_run)]

    trust(monkeypatch, pki.ca)
    ship_one_line(shipped_run)
    assert [entry.message async for entry in run_output(shipped_run)] == [f"line of {shipped_run}"]
    assert lines_of(elasticsearch, refused_run) == 0


def sms_through_tls(prefect_front: str, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sms ARGS`` on Prefect's HTTPS front with only ``SMS_CA_BUNDLE`` naming a CA (none of
    Prefect's own TLS settings, no OpenSSL default file)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_SSL_CERT_FILE", "SSL_CERT_FILE")}
    env.update(PREFECT_API_URL=f"{prefect_front}/prefect/api", SMS_CA_BUNDLE=str(bundle), SMS_LOCAL="1")
    return subprocess.run([venv_binary("sms"), *args], env=env, capture_output=True, text=True, timeout=180)


async def test_smss_prefect_clients_verify_prefect_with_the_ca_bundle(fronts, pki):
    trusted, untrusted = f"tls-ok-{uuid.uuid4().hex[:8]}", f"tls-refused-{uuid.uuid4().hex[:8]}"
    added = sms_through_tls(fronts["prefect"], pki.ca, "host", "add", trusted, "--local")
    assert added.returncode == 0, added.stdout + added.stderr

    refused = sms_through_tls(fronts["prefect"], pki.other_ca, "host", "add", untrusted, "--local")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"the Prefect API at {fronts['prefect']}/prefect/api: TLS certificate refused" in refused.stderr
    assert f"SMS_CA_BUNDLE={pki.other_ca}" in refused.stderr
    names = {host.name for host in await hosts.listing()}  # read on the plain server behind the front
    assert trusted in names and untrusted not in names


class HttpsRealm:
    """The session's Keycloak realm as seen over HTTPS (issuer and tokens)."""

    def __init__(self, keycloak) -> None:
        self.keycloak = keycloak
        self.issuer = keycloak.https_issuer

    def token(self, user: str) -> str:
        return self.keycloak.token(user, https=True)


def test_the_gateway_verifies_keycloak_prefect_and_prometheus(
        keycloak, fronts, scraped_exporter, catalog, pki, monkeypatch, capfd):
    prometheus, _ = scraped_exporter
    realm = HttpsRealm(keycloak)
    monitoring = {"prefect_url": fronts["prefect"], "prometheus_url": prometheus.url}

    trust(monkeypatch, pki.bundle(pki.ca, keycloak.ca_path))
    with serve(realm, catalog, **monitoring) as gateway:
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30).json()
        assert ready["checks"] == {"keycloak": "ok", "prefect": "ok"}
        overview = httpx.get(f"{gateway.url}/api/v1/monitor/overview", headers=gateway.headers("viola"), timeout=30)
        assert overview.status_code == 200, overview.text

    trust(monkeypatch, pki.bundle(keycloak.ca_path, pki.other_ca))  # Keycloak trusted, Prefect and Prometheus not
    with serve(realm, catalog, **monitoring) as gateway:
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30).json()
        assert ready["checks"] == {"keycloak": "ok", "prefect": "unavailable: TLS certificate refused"}
        overview = httpx.get(f"{gateway.url}/api/v1/monitor/overview", headers=gateway.headers("viola"), timeout=30)
        assert overview.status_code == 503
        assert f"Prometheus at {prometheus.url}: TLS certificate refused" in overview.json()["detail"]

    capfd.readouterr()  # the sms.tls log goes to stderr (Prefect's logging setup replaces pytest's handlers)
    name = f"tls-{uuid.uuid4().hex[:8]}"
    trust(monkeypatch, pki.bundle(pki.ca, pki.other_ca))  # Keycloak not trusted
    with serve(realm, catalog, **monitoring) as gateway:
        added = httpx.post(f"{gateway.url}/api/v1/scripts", headers=gateway.headers("adam"), timeout=30,
                           json={"name": name, "interpreter": "sh", "host": "local", "content": "echo hi"})
        assert added.status_code == 401
        assert "TLS certificate refused" in added.json()["detail"]
    assert f"Keycloak at {realm.issuer}: TLS certificate refused" in capfd.readouterr().err
    with catalog.session() as session:
        assert session.query(Script).filter_by(name=name).count() == 0


def test_prometheus_scrapes_the_exporter_over_https_only_with_the_ca(scraped_exporter):
    prometheus, _ = scraped_exporter
    trusted = prometheus.wait_for('up{job="exporter"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    assert trusted and trusted[0]["value"][1] == "1"
    untrusted = prometheus.wait_for('up{job="untrusted"}', lambda r: bool(r))
    assert untrusted and untrusted[0]["value"][1] == "0"
    assert prometheus.query('scrape_samples_scraped{job="untrusted"}')[0]["value"][1] == "0"
    assert prometheus.query('sms_exporter_connected')  # the trusted scrape carried the exporter's metrics
