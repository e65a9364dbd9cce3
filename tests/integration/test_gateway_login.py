"""`sms login` (device code approved in the real Keycloak's pages, password grant), the stored
token file, its refresh, and the SDK's gateway mode (stored login, token, client credentials)."""

from __future__ import annotations

import html
import json
import os
import re
import stat
import subprocess
import sys
from contextlib import closing
from http.cookiejar import CookieJar
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sms_plugin import credentials
from sms_plugin.cli.app import app
from sms_plugin.errors import SMSError
from sms_plugin.sdk import GatewayClient, SMSClient
from tests.integration.test_gateway_auth import Browser, LoopbackIsSecure, login_form

pytestmark = pytest.mark.integration


@pytest.fixture
def sms_home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SMS_HOME", str(tmp_path))
    return tmp_path


def approve_device(verification_uri_complete: str, username: str) -> None:
    """What the user does in a browser: log in on Keycloak's device page and grant access."""
    with closing(Browser(timeout=30, cookies=CookieJar(LoopbackIsSecure()))) as browser:
        consent = browser.follow(login_form(browser, browser.follow(browser.get(verification_uri_complete)), username))
        action = re.search(r'<form[^>]*action="([^"]*login-actions/consent[^"]*)"', consent.text)
        assert action, consent.text[-500:]
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', consent.text))
        done = browser.follow(
            browser.post(httpx.URL(str(consent.url)).join(html.unescape(action.group(1))), data={**hidden, "accept": "Yes"})
        )
        assert "Device Login Successful" in done.text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sms_login_with_the_device_code(gateway_bed, sms_home) -> None:
    sms = str(Path(sys.executable).with_name("sms"))
    env = {**os.environ, "SMS_HOME": str(sms_home), "NO_COLOR": "1", "COLUMNS": "300"}
    with subprocess.Popen(
        [sms, "login", "--gateway", gateway_bed.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as cli:
        assert cli.stdout is not None
        prompt = cli.stdout.readline()
        found = re.search(r"Open (\S+) and enter the code (\S+)", prompt)
        assert found, prompt
        approve_device(f"{found.group(1)}?user_code={found.group(2)}", "anna")
        rest, _ = cli.communicate(timeout=60)
    assert cli.returncode == 0, rest
    assert "Logged in" in rest and "as anna" in rest
    stored = sms_home / "login.json"
    assert _mode(stored) == 0o600
    assert json.loads(stored.read_text())["username"] == "anna"
    with SMSClient(gateway_url=gateway_bed.url) as sdk:  # the SDK uses the stored login
        assert isinstance(sdk, GatewayClient)
        assert isinstance(sdk.scripts(), list)


def test_sms_login_with_a_password_then_refresh(gateway_bed, sms_home) -> None:
    result = CliRunner().invoke(app, ["login", "--gateway", gateway_bed.url, "--password", "-u", "otto"], input="otto-pw\n")
    assert result.exit_code == 0, result.output
    assert "otto-pw" not in result.output
    login = credentials.load()
    assert login is not None and login.username == "otto" and login.refresh_token
    # An access token about to expire is renewed with the refresh token and saved again.
    credentials.save(credentials.StoredLogin(**{**login.__dict__, "expires_at": 0.0}))
    renewed = credentials.access_token(credentials.load())
    assert renewed != login.access_token
    assert credentials.load().access_token == renewed and _mode(sms_home / "login.json") == 0o600
    with SMSClient(gateway_url=gateway_bed.url) as sdk:
        assert isinstance(sdk.runs(), list)


def test_sms_login_wrong_password_is_one_clear_line(gateway_bed, sms_home) -> None:
    result = CliRunner().invoke(app, ["login", "--gateway", gateway_bed.url, "--password", "-u", "otto"], input="nope\n")
    assert result.exit_code != 0
    assert isinstance(result.exception, SMSError) and "Invalid user credentials" in str(result.exception)
    assert not (sms_home / "login.json").exists()


def test_sdk_with_client_credentials_or_a_token(gateway_bed, keycloak, sms_home) -> None:
    with SMSClient(gateway_url=gateway_bed.url, client_id="sms-gateway", client_secret="sms-gateway-secret") as sdk:
        assert isinstance(sdk.scripts(), list)
    with SMSClient(gateway_url=gateway_bed.url, token=keycloak.token("viola")) as sdk:
        assert isinstance(sdk.hosts(), list)
        with pytest.raises(SMSError, match="403"):
            sdk.run("anything")  # viewers may not start runs
    with SMSClient(gateway_url=gateway_bed.url, token="not-a-token") as sdk, pytest.raises(SMSError, match="401"):
        sdk.scripts()
    with SMSClient(gateway_url=gateway_bed.url) as sdk, pytest.raises(SMSError, match="sms login"):
        sdk.scripts()  # nothing stored in this SMS_HOME
