"""`sms up` in gateway mode: the links Prefect writes into run logs, the UI it serves and what it
tells people about the CLI."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from prefect.utilities.urls import url_for
from rich.console import Console

from sms_plugin.stack import EmbeddedStack

GATEWAY = "https://sms.example:8443"


@pytest.fixture
def stack(monkeypatch, tmp_path: Path) -> EmbeddedStack:
    monkeypatch.setenv("SMS_HOME", str(tmp_path))
    monkeypatch.setenv("SMS_OIDC_ISSUER", "https://kc.example/realms/sms")
    monkeypatch.setenv("SMS_GATEWAY_PUBLIC_URL", GATEWAY)
    return EmbeddedStack(port=4200, catalog_path=tmp_path, console=Console(file=io.StringIO(), width=200))


def test_view_at_links_point_at_the_gateway(stack: EmbeddedStack) -> None:
    env = stack._environment()
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/prefect/api"  # the workers talk to Prefect directly
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_UI_URL: env["PREFECT_UI_URL"]}):
        link = url_for("flow-run", obj_id=uuid.uuid4())
    assert link is not None and link.startswith(f"{GATEWAY}/prefect/runs/flow-run/")


def test_the_ui_is_v1_and_analytics_are_off(stack: EmbeddedStack) -> None:
    env = stack._environment()
    assert (env["PREFECT_SERVER_UI_V2_ENABLED"], env["PREFECT_SERVER_ANALYTICS_ENABLED"]) == ("false", "false")


def test_the_ui_files_are_copied_into_the_prefect_home(stack: EmbeddedStack) -> None:
    """Not into Prefect's package folder, which every Prefect server of the installation shares."""
    env = stack._environment()
    assert env["PREFECT_UI_STATIC_DIRECTORY"] == str(Path(env["PREFECT_HOME"]) / "ui")


def test_sms_up_says_how_to_use_the_cli(stack: EmbeddedStack) -> None:
    stack._announce()
    said = stack.console.file.getvalue()  # type: ignore[attr-defined]
    assert f"sms login --gateway {GATEWAY}" in said and "sms script list" in said
