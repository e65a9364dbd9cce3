"""The console in a real browser (Debian's Chromium driven by Playwright) against the real gateway,
Keycloak, Prefect, an sms worker and sshd: log in through Keycloak's form as author, operator, viewer
and admin; add a script in the editor, push a second version and see the diff; run it and watch the
output; stop a long run and the remote process is gone; a viewer has no run or stop controls and a
forced request is refused. Screenshots of each page go to ``test-artifacts/console/`` (git-ignored)."""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from infra.testbed.prefect_worker import PrefectWorker
from tests.conftest import _started
from tests.integration.conftest import alive, login_of

from playwright.sync_api import TimeoutError as PlaywrightTimeout

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SMS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
HOST = f"console-ssh-{uuid.uuid4().hex[:6]}"
SCRIPT = f"console-e2e-{uuid.uuid4().hex[:6]}"
SLEEP = f"30{uuid.uuid4().int % 1000:03d}"  # seconds; a number unlikely to be running on the host already
V1 = 'echo "first version"\n'
V2 = f'echo "console run $1"\nif [ "$1" = long ]; then sleep {SLEEP}; fi\n'


class AuthorizedWorker(PrefectWorker):
    """A worker on the gateway's Prefect, which answers only callers with its auth string."""

    def __init__(self, api_url: str, auth_string: str, extra_env: dict[str, str]) -> None:
        super().__init__(api_url, extra_env={**extra_env, "PREFECT_API_AUTH_STRING": auth_string})
        self.auth_string = auth_string

    def _started(self) -> bool:
        if f"Worker {self.worker_name!r} started!" not in self.log_path.read_text(errors="replace"):
            return False
        basic = base64.b64encode(self.auth_string.encode()).decode()
        reply = httpx.get(f"{self.api_url}/work_pools/{self.pool}", timeout=2, headers={"Authorization": f"Basic {basic}"})
        return reply.status_code == 200


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: install Debian's chromium (infra/bootstrap.sh does)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console_bed(gateway_bed, keycloak, ssh_server) -> Iterator[object]:
    """The gateway with a worker on its Prefect and an SSH host (the test sshd) added by an admin."""
    extra = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    worker = _started(AuthorizedWorker(gateway_bed.prefect.api_url, gateway_bed.auth_string, extra))
    admin = {"Authorization": f"Bearer {keycloak.token('adam')}"}
    login = login_of(ssh_server)
    body = {"name": HOST, "kind": "ssh", "address": login["address"], "port": login["port"], "username": login["username"],
            "private_key": login["private_key"], "host_keys": login["host_keys"], "labels": ["console"]}
    reply = httpx.post(f"{gateway_bed.url}/api/v1/hosts", json=body, headers=admin, timeout=60)
    assert reply.status_code == 201, reply.text
    yield gateway_bed
    worker.stop()


def menu(page: Page, name: str) -> Locator:
    """The link to page ``name`` in the console's menu (a dashboard tile may carry the same name)."""
    return page.get_by_role("menu", name="Pages").get_by_role("link", name=name, exact=True)


def log_in(browser, url: str, username: str):
    """A new browser page logged in through Keycloak's own form."""
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/")
    page.get_by_role("link", name="Log in", exact=True).click()
    page.locator("#username").fill(username)
    page.locator("#password").fill(f"{username}-pw")
    page.locator("#kc-login").click()
    page.get_by_test_id("who").get_by_text(username).wait_for()
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_author_adds_a_script_in_the_editor_and_diffs_two_versions(console_bed, browser) -> None:
    page = log_in(browser, console_bed.url, "anna")
    assert page.get_by_test_id("who").get_by_text("sms-author").is_visible()
    shot(page, "dashboard")
    menu(page, "Scripts").click()
    page.get_by_role("button", name="Add script", exact=True).click()
    page.get_by_label("Name", exact=True).fill(SCRIPT)
    page.get_by_label("Host", exact=True).click()
    page.locator(".ant-select-item-option", has_text=HOST).click()
    page.get_by_label("Tags", exact=True).fill("console")
    page.keyboard.press("Enter")
    page.locator(".cm-content").first.click()
    page.keyboard.insert_text(V1)
    page.get_by_label("Schedule (cron)", exact=True).fill("0 2 * * 1-5")
    page.get_by_text("Monday through Friday").wait_for()  # the cron read back in words
    page.get_by_label("Schedule (cron)", exact=True).fill("")
    shot(page, "script-add")
    page.get_by_role("button", name="Add script", exact=True).last.click()
    page.get_by_role("heading", name=SCRIPT).wait_for()
    page.get_by_role("tab", name="Versions", exact=True).click()
    page.get_by_role("button", name="Push a new version…", exact=True).click()
    page.locator(".cm-content").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(V2)
    page.get_by_label("Version comment", exact=True).fill("takes an argument")
    page.get_by_role("button", name="Store version", exact=True).click()
    page.get_by_text("Version 2 stored").wait_for()
    diff = page.get_by_test_id("diff")
    diff.locator("tr[data-kind=changed]").first.wait_for()
    assert "first version" in diff.locator("tr[data-kind=changed]").first.inner_text()
    assert "console run $1" in diff.inner_text()
    shot(page, "script-versions-diff")
    page.context.close()


def test_an_operator_runs_watches_and_stops_and_the_remote_process_is_gone(console_bed, browser, ssh_server) -> None:
    page = log_in(browser, console_bed.url, "otto")
    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    assert not page.get_by_role("button", name="Push a new version…", exact=True).is_visible()
    page.get_by_label("Arguments (one per line)", exact=True).fill("short")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    page.get_by_test_id("output").get_by_text("console run short").wait_for(timeout=120_000)
    page.get_by_test_id("run-state").get_by_text("COMPLETED").wait_for(timeout=60_000)
    assert page.get_by_test_id("exit-code").inner_text() == "0"
    assert page.get_by_role("link", name="Open in the Prefect UI", exact=True).get_attribute("href").startswith("/prefect/runs/flow-run/")
    shot(page, "run-completed")

    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_label("Arguments (one per line)", exact=True).fill("long")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    page.get_by_test_id("output").get_by_text("console run long").wait_for(timeout=120_000)
    deadline = time.monotonic() + 30
    while not alive(ssh_server, f"sleep {SLEEP}") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert alive(ssh_server, f"sleep {SLEEP}"), "the long run's process never showed on the host"
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_role("button", name="Stop", exact=True).last.click()  # the confirmation
    run_id = page.url.rsplit("/", 1)[1]
    try:
        page.get_by_test_id("run-state").get_by_text("CANCELLED").wait_for(timeout=90_000)
    except PlaywrightTimeout:
        shot(page, "run-stop-timeout")
        detail = page.request.get(f"{console_bed.url}/api/v1/runs/{run_id}").text()
        pytest.fail(f"the page never showed CANCELLED; the run is now {detail}; "
                    f"process alive: {alive(ssh_server, f'sleep {SLEEP}')}", pytrace=False)
    deadline = time.monotonic() + 30
    while alive(ssh_server, f"sleep {SLEEP}") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not alive(ssh_server, f"sleep {SLEEP}"), "the remote process outlived the stop"
    assert not page.get_by_role("button", name="Stop", exact=True).is_visible()
    shot(page, "run-stopped")
    menu(page, "Runs").click()
    page.get_by_role("link", name=SCRIPT, exact=True).first.wait_for()
    shot(page, "runs")
    page.context.close()


def test_a_viewer_sees_no_run_or_stop_controls_and_a_forced_request_is_refused(console_bed, browser) -> None:
    page = log_in(browser, console_bed.url, "viola")
    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_role("tab", name="Versions", exact=True).wait_for()
    assert not page.get_by_role("tab", name="Run", exact=True).is_visible()
    assert not page.get_by_role("button", name="Push a new version…", exact=True).is_visible()
    page.goto(f"{console_bed.url}/runs")
    page.locator(".ant-table-tbody tr").first.get_by_role("link").first.click()  # the newest run
    page.get_by_test_id("run-state").wait_for()
    assert not page.get_by_role("button", name="Stop", exact=True).is_visible()
    assert not menu(page, "Access").is_visible()
    before = httpx.get(f"{console_bed.url}/api/v1/runs?script={SCRIPT}", timeout=30,
                       headers={"Cookie": _cookie(page)}).json()
    forced = page.evaluate(
        """async (name) => {
            const r = await fetch(`/api/v1/scripts/${name}/runs`, {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
            return [r.status, await r.text()];
        }""",
        SCRIPT,
    )
    assert forced[0] == 403, forced
    time.sleep(2)
    after = httpx.get(f"{console_bed.url}/api/v1/runs?script={SCRIPT}", timeout=30, headers={"Cookie": _cookie(page)}).json()
    assert len(after) == len(before)  # nothing was started
    page.context.close()


def test_an_admin_sees_hosts_and_access(console_bed, browser) -> None:
    page = log_in(browser, console_bed.url, "adam")
    menu(page, "Hosts").click()
    page.get_by_role("cell", name=HOST, exact=True).wait_for()
    shot(page, "hosts")
    menu(page, "Access").click()
    page.get_by_role("button", name="Add rule", exact=True).wait_for()
    shot(page, "access-rules")
    page.get_by_role("tab", name="Audit trail", exact=True).click()
    page.get_by_label("Action", exact=True).fill("api.run.start")
    page.get_by_role("button", name="Filter", exact=True).click()
    page.get_by_role("cell", name="api.run.start", exact=True).first.wait_for()
    shot(page, "access-audit")
    menu(page, "Logs").click()
    shot(page, "logs")
    page.get_by_role("button", name="Log out", exact=True).click()
    page.get_by_role("link", name="Log in", exact=True).wait_for()
    assert page.request.get(f"{console_bed.url}/auth/me").status == 401
    page.context.close()


def _cookie(page) -> str:
    return "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies() if c["name"] == "sms_session")

