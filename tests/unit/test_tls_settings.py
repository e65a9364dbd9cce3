"""The TLS settings of SMS's client links: SMS_CA_BUNDLE, the catalog's SMS_DATABASE_TLS and Kafka's
security settings (docs/tls.md). The links themselves are proven in tests/integration/test_tls_links.py."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from infra.testbed.tls import make_ca_and_server
from sms_plugin import settings, tls
from sms_plugin.errors import SMSError
from sms_plugin.events.kafka_security import KafkaSecurity
from sms_plugin.gateway.config import load_settings


def test_without_a_bundle_the_system_store_verifies_names_and_chains(monkeypatch):
    monkeypatch.delenv("SMS_CA_BUNDLE", raising=False)
    context = tls.client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls.ca_location() == "probe"


def test_a_bundle_is_the_only_trust_given(monkeypatch, tmp_path):
    ca, _, _ = make_ca_and_server(tmp_path)
    monkeypatch.setenv("SMS_CA_BUNDLE", str(ca))
    context = tls.client_context()
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "SMS test CA"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls.ca_location() == str(ca)


def test_a_missing_or_empty_bundle_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SMS_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(SMSError, match="SMS_CA_BUNDLE=.*is not a file"):
        tls.client_context()
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    monkeypatch.setenv("SMS_CA_BUNDLE", str(tmp_path / "empty.pem"))
    with pytest.raises(SMSError, match="holds no PEM CA certificate"):
        tls.client_context()


def test_only_a_certificate_failure_is_called_a_refusal():
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise failure
        except ssl.SSLError as error:
            raise ConnectionError("could not connect") from error
    except ConnectionError as wrapped:
        refused = tls.refusal("Prometheus at https://prom:9090", wrapped)
    assert refused is not None
    assert str(refused).startswith("Prometheus at https://prom:9090: TLS certificate refused (unable to get local issuer")
    assert tls.refusal("Prometheus at https://prom:9090", ConnectionRefusedError("refused")) is None


@pytest.mark.parametrize(("value", "host", "required"), [
    ("", "db.example", True), ("", "127.0.0.1", False), ("", None, False),
    ("on", "127.0.0.1", True), ("off", "db.example", False),
])
def test_the_catalog_requires_tls_beyond_loopback_unless_told(monkeypatch, value, host, required):
    monkeypatch.setenv("SMS_DATABASE_TLS", value)
    assert settings.database_tls(host) is required


def test_a_wrong_database_tls_value_is_refused(monkeypatch):
    monkeypatch.setenv("SMS_DATABASE_TLS", "maybe")
    with pytest.raises(SMSError, match="bad setting SMS_DATABASE_TLS: Input should be a valid boolean"):
        settings.database_tls("db.example")


def kafka(bootstrap: str, **given: object) -> KafkaSecurity:
    return KafkaSecurity(bootstrap, **{"protocol": None, "username": None, "password": None, **given})


def test_kafka_is_plain_on_loopback_and_verified_tls_elsewhere(monkeypatch):
    monkeypatch.delenv("SMS_CA_BUNDLE", raising=False)
    assert kafka("127.0.0.1:9092,localhost:9093").client_config() == {"security.protocol": "PLAINTEXT"}
    remote = kafka("kafka-1:9093,127.0.0.1:9092").client_config()
    assert remote == {"security.protocol": "SSL", "ssl.ca.location": "probe",
                      "enable.ssl.certificate.verification": True, "ssl.endpoint.identification.algorithm": "https"}


@pytest.fixture
def clear_text_warnings(caplog):
    """The ``sms.tls`` warnings logged during the test (each link warns once per process)."""
    tls.warn_clear_text.cache_clear()
    caplog.set_level("WARNING", logger="sms.tls")
    yield lambda: [r.getMessage() for r in caplog.records if r.name == "sms.tls"]
    tls.warn_clear_text.cache_clear()


def test_clear_text_to_a_peer_beyond_loopback_is_allowed_but_never_silent(monkeypatch, clear_text_warnings):
    from sms_plugin.catalog import Catalog

    monkeypatch.setenv("SMS_DATABASE_TLS", "off")
    Catalog("mysql+pymysql://sms:db-pass-7@db.example:3307/sms")
    Catalog("mysql+pymysql://sms:db-pass-7@db.example:3307/sms")  # once per process, not per catalog
    Catalog("mysql+pymysql://sms:db-pass-7@127.0.0.1:3307/sms")  # loopback: nothing to say
    kafka("kafka-1:9092", protocol="PLAINTEXT").client_config()
    kafka("kafka-1:9092", protocol="SASL_PLAINTEXT", username="u", password=SecretStr("kafka-pass-8")).client_config()
    kafka("127.0.0.1:9092", protocol="PLAINTEXT").client_config()
    load_settings(oidc_issuer="https://kc.example/realms/sms", host="0.0.0.0", allow_plain_http=True)
    said = clear_text_warnings()
    assert [line.split(": what crosses")[0] for line in said] == [
        "the catalog database at db.example:3307: TLS is off (SMS_DATABASE_TLS=off)",
        "Kafka at kafka-1:9092: TLS is off (SMS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT)",
        "Kafka at kafka-1:9092: TLS is off (SMS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT)",
        "the gateway on 0.0.0.0: TLS is off (SMS_GATEWAY_ALLOW_PLAIN_HTTP=1 (--insecure-http))"]
    assert not any("db-pass-7" in line or "kafka-pass-8" in line for line in said)


def test_tls_on_or_loopback_warns_of_nothing(monkeypatch, clear_text_warnings):
    from sms_plugin.catalog import Catalog

    monkeypatch.delenv("SMS_DATABASE_TLS", raising=False)
    monkeypatch.delenv("SMS_CA_BUNDLE", raising=False)
    Catalog("mysql+pymysql://sms:p@db.example:3307/sms")
    kafka("kafka-1:9093").client_config()
    load_settings(oidc_issuer="https://kc.example/realms/sms", host="127.0.0.1")
    assert clear_text_warnings() == []


def test_a_kafka_user_logs_in_with_scram_and_its_password_stays_secret():
    security = kafka("kafka-1:9093", username="sms-publisher", password=SecretStr("s3cret"))
    config = security.client_config()
    assert (config["security.protocol"], config["sasl.mechanism"], config["sasl.password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "s3cret")
    assert "s3cret" not in repr(security)


@pytest.mark.parametrize(("given", "message"), [
    ({"protocol": "SASL_SSL"}, "needs SMS_KAFKA_SASL_USERNAME and SMS_KAFKA_SASL_PASSWORD"),
    ({"protocol": "SSL", "username": "u", "password": SecretStr("p")}, "use SMS_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"protocol": "TLS"}, "use one of PLAINTEXT, SSL"),
    ({"username": "u", "password": SecretStr("p"), "mechanism": "PLAIN"}, "SMS_KAFKA_SASL_MECHANISM='PLAIN'"),
])
def test_inconsistent_kafka_settings_are_refused(given, message):
    with pytest.raises(SMSError, match=message):
        kafka("kafka-1:9093", **given).client_config()


@pytest.mark.parametrize("verify", [False, True])
def test_the_sdk_client_cannot_turn_verification_off(verify):
    from sms_plugin.gateway_client import GatewayClient

    with pytest.raises(SMSError, match="cannot be turned off"):
        GatewayClient("https://gateway.example", token="t", verify=verify)


def test_prefects_clients_take_the_bundle_unless_prefects_own_setting_is_given(monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    ca, _, _ = make_ca_and_server(tmp_path)
    monkeypatch.delenv("SMS_CA_BUNDLE", raising=False)
    before = PREFECT_API_SSL_CERT_FILE.value()
    with tls.prefect_trust():
        assert PREFECT_API_SSL_CERT_FILE.value() == before  # no bundle: Prefect's own choice
    monkeypatch.setenv("SMS_CA_BUNDLE", str(ca))
    with tls.prefect_trust():
        assert PREFECT_API_SSL_CERT_FILE.value() == str(ca)
    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: "/etc/prefect/ca.pem"}), tls.prefect_trust():
        assert PREFECT_API_SSL_CERT_FILE.value() == "/etc/prefect/ca.pem"  # set by the user: it wins
    assert PREFECT_API_SSL_CERT_FILE.value() == before
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    monkeypatch.setenv("SMS_CA_BUNDLE", str(tmp_path / "empty.pem"))
    with pytest.raises(SMSError, match="SMS_CA_BUNDLE=.*holds no PEM CA certificate"), tls.prefect_trust():
        pass


def test_a_refused_prefect_certificate_names_the_setting_that_chose_the_trust(monkeypatch, tmp_path):
    """Prefect's own PREFECT_API_SSL_CERT_FILE wins over SMS_CA_BUNDLE: a refusal then names it."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    ca, _, _ = make_ca_and_server(tmp_path)
    monkeypatch.setenv("SMS_CA_BUNDLE", str(ca))
    link = "the Prefect API at https://prefect.example/api"
    with tls.prefect_trust():
        assert tls.prefect_api_trust() is None  # the bundle is Prefect's trust too
        assert f"against the CAs of SMS_CA_BUNDLE={ca}: put the CA that signed it in SMS_CA_BUNDLE" in str(
            tls.certificate_refused(link, "self-signed certificate", tls.prefect_api_trust()))
    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: "/etc/prefect/ca.pem"}), tls.prefect_trust():
        trust = tls.prefect_api_trust()
        assert trust == ("PREFECT_API_SSL_CERT_FILE", "/etc/prefect/ca.pem")
        assert str(tls.certificate_refused(link, "self-signed certificate", trust)) == (
            "the Prefect API at https://prefect.example/api: TLS certificate refused (self-signed certificate); "
            "it does not verify against the CAs of PREFECT_API_SSL_CERT_FILE=/etc/prefect/ca.pem: "
            "put the CA that signed it in PREFECT_API_SSL_CERT_FILE (docs/tls.md)")


def test_the_publishers_metrics_serve_https_to_a_scraper_trusting_the_ca_only(tmp_path):
    import httpx

    from infra.testbed.ports import free_port
    from sms_plugin.events.publisher import PublisherMetrics, PublisherSettings
    from sms_plugin.settings import EventSettings

    (tmp_path / "trusted").mkdir(), (tmp_path / "other").mkdir()
    ca, certificate, key = make_ca_and_server(tmp_path / "trusted")
    other_ca, _, _ = make_ca_and_server(tmp_path / "other", label="SMS untrusted")
    events = EventSettings(kafka_bootstrap="127.0.0.1:9092", metrics_port=free_port(), metrics_tls_cert=certificate,
                           metrics_tls_key=key)
    endpoint = PublisherSettings.of(events).metrics
    assert endpoint is not None and endpoint.url.startswith("https://127.0.0.1:")
    metrics = PublisherMetrics()
    metrics.backlog.set(7)
    port = endpoint.serve(metrics.registry)
    url = f"https://127.0.0.1:{port}/metrics"
    scraped = httpx.get(url, verify=ssl.create_default_context(cafile=ca), timeout=10)
    assert scraped.status_code == 200 and "sms_events_outbox_backlog 7.0" in scraped.text
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(url, verify=ssl.create_default_context(cafile=other_ca), timeout=10)
    assert tls.verification_failure(refused.value) is not None  # the certificate, not the connection
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no clear text on the HTTPS port
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_the_publishers_metrics_stay_off_other_addresses_in_clear_text_unless_allowed():
    from sms_plugin.events.publisher import PublisherMetrics, PublisherSettings
    from sms_plugin.settings import EventSettings

    events = EventSettings(kafka_bootstrap="127.0.0.1:9092", metrics_address="0.0.0.0", metrics_port=0)
    assert PublisherSettings.of(events).metrics is None  # port 0: not served
    endpoint = PublisherSettings.of(events.model_copy(update={"metrics_port": 1})).metrics
    assert endpoint is not None
    with pytest.raises(SMSError, match="will not serve plain HTTP on 0.0.0.0.*SMS_EVENTS_METRICS_ALLOW_PLAIN_HTTP=1"):
        endpoint.serve(PublisherMetrics().registry)
    half = EventSettings(kafka_bootstrap="127.0.0.1:9092", metrics_tls_cert="/etc/sms/metrics.pem")
    with pytest.raises(SMSError, match="give both SMS_EVENTS_METRICS_TLS_CERT and SMS_EVENTS_METRICS_TLS_KEY"):
        PublisherSettings.of(half).metrics.serve(PublisherMetrics().registry)


def test_the_blocking_sdk_gives_prefects_clients_the_bundle(monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    from sms_plugin.sdk import AsyncSMSClient, SMSClient

    async def prefect_ca_file(self: AsyncSMSClient) -> str | None:
        return PREFECT_API_SSL_CERT_FILE.value()

    ca, _, _ = make_ca_and_server(tmp_path)
    monkeypatch.setenv("SMS_CA_BUNDLE", str(ca))
    monkeypatch.setattr(AsyncSMSClient, "prefect_ca_file", prefect_ca_file, raising=False)
    with SMSClient(f"sqlite:///{tmp_path / 'catalog.db'}") as sms:
        assert sms.prefect_ca_file() == str(ca)  # what every Prefect client of its calls verifies with
