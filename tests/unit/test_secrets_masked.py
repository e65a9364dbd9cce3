"""Secrets never appear in reprs or printed URLs; plain HTTP beyond loopback is refused."""

from __future__ import annotations

import re

import pytest

from sms_plugin.errors import InvalidInput
from sms_plugin.gateway.config import load_settings
from sms_plugin.listening import is_loopback, plain_http_refusal
from sms_plugin.settings import shown_database_url
from sms_plugin.transports.psrp import WinRMTarget
from sms_plugin.transports.ssh import SSHTarget

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def test_ssh_target_repr_masks_key_passphrase_and_password() -> None:
    target = SSHTarget(address="web-1", username="ops", private_key=KEY, private_key_passphrase="pass-phrase-1",
                       password="pass-word-1")
    for shown in (repr(target), str(target), f"{target}", f"{[target]}"):
        assert "b3BlbnNzaC1rZXktdjEAAAAA" not in shown and "pass-phrase-1" not in shown and "pass-word-1" not in shown
        assert "private_key='***'" in shown and "password='***'" in shown and "username='ops'" in shown
    assert "password=None" in repr(SSHTarget(address="web-1"))  # unset secrets say so


def test_winrm_target_repr_masks_the_password() -> None:
    shown = repr(WinRMTarget(address="win-1", username="CORP\\svc", password="pass-word-2"))
    assert "pass-word-2" not in shown and "password='***'" in shown and "address='win-1'" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql+pymysql://sms:s3cr%40t-pw@db.example:3306/sms", "mysql+pymysql://sms:***@db.example:3306/sms"),
        ("postgresql://u:pw-9@h/db", "postgresql://u:***@h/db"),
        ("sqlite:////var/lib/sms/catalog.db", "sqlite:////var/lib/sms/catalog.db"),
    ],
)
def test_the_printed_catalog_url_hides_its_password(url: str, shown: str) -> None:
    assert shown_database_url(url) == shown


def test_sms_up_prints_the_masked_catalog_url(monkeypatch, tmp_path) -> None:
    from rich.console import Console

    from sms_plugin.stack import EmbeddedStack

    monkeypatch.setenv("SMS_HOME", str(tmp_path))
    monkeypatch.setenv("SMS_DATABASE_URL", "mysql+pymysql://sms:up-secret-7@db:3306/sms")
    monkeypatch.delenv("SMS_OIDC_ISSUER", raising=False)
    console = Console(record=True, width=300)
    EmbeddedStack(port=4200, catalog_path=tmp_path / "none", console=console)._announce()
    printed = console.export_text()
    assert "up-secret-7" not in printed and "mysql+pymysql://sms:***@db:3306/sms" in printed


def test_gateway_settings_repr_masks_its_secrets(monkeypatch) -> None:
    monkeypatch.setenv("SMS_GATEWAY_SESSION_SECRET", "session-secret-3")
    settings = load_settings(oidc_issuer="https://kc.example/realms/sms", oidc_client_secret="client-secret-4",
                             prefect_auth_string="auth-string-5")
    for secret in ("session-secret-3", "client-secret-4", "auth-string-5"):
        assert secret not in repr(settings) and secret not in str(settings)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("sms.example.com", False),
])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_http_beyond_loopback_needs_tls_or_an_explicit_yes() -> None:
    assert plain_http_refusal("x", "0.0.0.0", tls=True, allowed=False, allowed_by="A=1", remedy="r") is None
    assert plain_http_refusal("x", "0.0.0.0", tls=False, allowed=True, allowed_by="A=1", remedy="r") is None
    assert plain_http_refusal("x", "127.0.0.1", tls=False, allowed=False, allowed_by="A=1", remedy="r") is None
    assert plain_http_refusal("x", "0.0.0.0", tls=False, allowed=False, allowed_by="A=1", remedy="r") == (
        "x will not serve plain HTTP on 0.0.0.0 (not a loopback address): r"
    )
    with pytest.raises(InvalidInput, match="SMS_GATEWAY_ALLOW_PLAIN_HTTP=1"):
        load_settings(oidc_issuer="https://kc.example/realms/sms", host="0.0.0.0")
    assert load_settings(oidc_issuer="https://kc.example/realms/sms", host="0.0.0.0", allow_plain_http=True).host == "0.0.0.0"


def test_the_exporter_refuses_plain_http_beyond_loopback() -> None:
    from sms_plugin.errors import SMSError
    from sms_plugin.telemetry.exporter import Exporter, ExporterSettings

    with pytest.raises(SMSError, match=re.escape("allow clear text with SMS_EXPORTER_ALLOW_PLAIN_HTTP=1 (--insecure-http)")):
        Exporter(ExporterSettings(address="0.0.0.0", port=0)).listen()


def test_the_exporters_errors_name_its_options_as_well_as_its_variables() -> None:
    """``sms exporter`` takes its settings as options too: its errors name both; the publisher's
    (``sms events``, variables only) name the variables alone (tests/unit/test_tls_settings.py)."""
    import socket

    from sms_plugin.errors import SMSError
    from sms_plugin.telemetry.exporter import Exporter, ExporterSettings

    with pytest.raises(SMSError, match=re.escape("give both SMS_EXPORTER_TLS_CERT (--tls-cert) and "
                                                 "SMS_EXPORTER_TLS_KEY (--tls-key), or neither")):
        Exporter(ExporterSettings(port=0, tls_cert="/etc/sms/metrics.pem")).listen()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SMSError, match=re.escape("choose another port with SMS_EXPORTER_PORT (--port)")):
            Exporter(ExporterSettings(port=taken.getsockname()[1])).listen()
