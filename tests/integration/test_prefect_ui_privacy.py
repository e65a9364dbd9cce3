"""The Prefect UI behind the gateway calls no analytics host: its settings point only at the
gateway, analytics are off, and the UI served is v1, whose code has no analytics client (the v2
UI starts one at every page load whatever the analytics setting says)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ANALYTICS_HOST = "amplitude.com"


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def entry_script(client: httpx.Client, page_path: str) -> str:
    """The JavaScript entry point of the UI page at ``page_path``, as a browser would load it."""
    page = client.get(page_path, headers={"accept": "text/html"})
    assert page.status_code == 200, page.text[:300]
    [src] = re.findall(r'<script type="module" crossorigin src="([^"]+)"', page.text)
    script = client.get(src)
    assert script.status_code == 200, (page_path, src, script.status_code)
    return script.text


def test_ui_settings_through_the_gateway_call_no_analytics_host(gateway_bed, keycloak) -> None:
    headers = {"Authorization": f"Bearer {keycloak.token('adam')}"}
    with httpx.Client(base_url=gateway_bed.url, headers=headers, timeout=30) as client:
        settings = client.get("/prefect/ui-settings").json()
        assert settings["auth"] is None
        assert (settings["default_ui"], settings["available_uis"], settings["v2_base_url"]) == ("v1", ["v1"], None)
        urls = [value for value in strings(settings) if "://" in value]
        assert urls and all(url.startswith(f"{gateway_bed.url}/prefect") for url in urls), urls

        assert client.get("/prefect/api/admin/settings").json()["server"]["analytics_enabled"] is False

        assert ANALYTICS_HOST not in entry_script(client, "/prefect/")  # what a browser gets: v1
        for v2_path in ("/prefect/v2/", "/prefect/v2", "/prefect/v2/runs", "/prefect/v2/assets/index.js"):
            reply = client.get(v2_path, headers={"accept": "text/html"})
            assert reply.status_code == 404 and "v2" in reply.json()["detail"], (v2_path, reply.text[:200])
    # Why: Prefect itself serves the v2 UI whatever PREFECT_SERVER_UI_V2_ENABLED says, and it
    # starts an analytics client.
    auth = base64.b64encode(gateway_bed.auth_string.encode()).decode()
    with httpx.Client(base_url=gateway_bed.prefect.url, headers={"Authorization": f"Basic {auth}"}, timeout=30) as direct:
        assert ANALYTICS_HOST in entry_script(direct, "/prefect/v2/")


def test_another_prefect_with_its_ui_elsewhere_leaves_these_pages_whole(gateway_bed, keycloak) -> None:
    """Prefect writes its base path into the UI files it copies; in its default folder (the
    package's own) the last server started with another base path breaks the other servers'
    pages (their script links answer 404). Every test-bed server, like `sms up`, keeps its own."""
    from infra.testbed.prefect_server import PrefectServer
    from tests.conftest import _started

    other = _started(PrefectServer(ui_api_url="http://127.0.0.1:9/api"))  # its UI at /, not /prefect
    try:
        assert httpx.get(f"{other.url}/", headers={"accept": "text/html"}, timeout=30).status_code == 200
        headers = {"Authorization": f"Bearer {keycloak.token('adam')}"}
        with httpx.Client(base_url=gateway_bed.url, headers=headers, timeout=30) as client:
            assert entry_script(client, "/prefect/")  # the script the page names is there
        auth = base64.b64encode(gateway_bed.auth_string.encode()).decode()
        with httpx.Client(base_url=gateway_bed.prefect.url, headers={"Authorization": f"Basic {auth}"}, timeout=30) as direct:
            assert ANALYTICS_HOST in entry_script(direct, "/prefect/v2/")
    finally:
        other.stop()
