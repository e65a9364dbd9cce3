"""The console in a real browser (Debian's Chromium driven by Playwright) against the real gateway,
Keycloak, Prefect, an sms worker, sshd, Prometheus and Elasticsearch: log in through Keycloak's form
as author, operator, viewer and admin; add a script in the editor, push a second version and see the
diff; run it and watch the output; stop a long run and the remote process is gone; search the log
for a line the run printed; a viewer has no run or stop controls and a forced request is refused; an
admin narrows a user with an access rule in the Access page, her console no longer offers the script
and her forced start is refused with no run made; an admin adds an SSH host whose key is not pinned,
a run on it fails before anything runs there, and the Hosts page shows the key's fingerprint to
trust, after which the host check passes. Each test relies on the module's fixtures and the author's
script only.

One browser, one gateway and one worker serve the whole module, and each user logs in once; every
wait is on what the page shows (or on the sshd's process list). Screenshots of each page go to
``test-artifacts/console/`` (git-ignored)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import expect

from infra.testbed.browser import chromium, log_in
from infra.testbed.gateway import GatewayBed
from infra.testbed.prefect_worker import PrefectWorker
from tests.conftest import _started
from tests.integration.conftest import alive, login_of

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
HOST = f"console-ssh-{uuid.uuid4().hex[:6]}"
SCRIPT = f"console-e2e-{uuid.uuid4().hex[:6]}"
ELSEWHERE = f"{SCRIPT}-elsewhere-*"
"""The scripts an access rule leaves paula: none that exists."""
SLEEP = f"30{uuid.uuid4().int % 1000:03d}"  # seconds; a number unlikely to be running on the host already
V1 = 'echo "first version"\n'
V2 = f'echo "console run $1"\nif [ "$1" = long ]; then sleep {SLEEP}; fi\n'
RUNS: dict[str, str] = {}
"""Run ids by argument, as the operator's test started them."""
expect.set_options(timeout=60_000)  # Playwright's 5 s is short for a gateway on a busy 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as opened:
        yield opened


@pytest.fixture(scope="module")
def console_bed(gateway_bed, keycloak, ssh_server, elasticsearch, prometheus) -> Iterator[GatewayBed]:
    """A gateway over the session gateway's Prefect that also asks Elasticsearch and Prometheus, an sms
    worker shipping output to Elasticsearch, and an SSH host (the test sshd) added by an admin."""
    logs = {"SMS_ELASTICSEARCH_URL": elasticsearch.url}
    shared = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    bed = _started(GatewayBed(keycloak.issuer, with_prefect=False, settings={
        **gateway_bed.prefect_settings(), **logs, "SMS_PROMETHEUS_URL": prometheus.url}))
    worker = _started(PrefectWorker(gateway_bed.prefect_settings()["PREFECT_API_URL"], worker_type="sms", auth_string=gateway_bed.auth_string,
                                    extra_env={**shared, **logs}))
    reply = httpx.post(f"{bed.url}/api/v1/hosts", json=host_body(ssh_server, HOST), headers=bearer(keycloak, "adam"), timeout=60)
    assert reply.status_code == 201, reply.text
    yield bed
    worker.stop()
    bed.stop()


@pytest.fixture(scope="module")
def logged_in(console_bed, browser) -> Iterator[Callable[[str], Page]]:
    """``logged_in(user)``: that user's page, logged in through Keycloak's own form the first time."""
    pages: dict[str, Page] = {}

    def page_of(username: str) -> Page:
        if username not in pages:
            pages[username] = log_in(browser, console_bed.url, username)
        return pages[username]

    yield page_of
    for page in pages.values():
        page.context.close()


def host_body(ssh_server, name: str) -> dict[str, object]:
    """``POST /api/v1/hosts``'s body for the test sshd as SSH host ``name``, its keys pinned."""
    login = login_of(ssh_server)
    return {"name": name, "kind": "ssh", "address": login["address"], "port": login["port"], "username": login["username"],
            "private_key": login["private_key"], "host_keys": login["host_keys"], "labels": ["console"]}


def bearer(keycloak, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keycloak.token(username)}"}


def menu(page: Page, name: str) -> Locator:
    """The link to page ``name`` in the console's menu (a dashboard tile may carry the same name)."""
    return page.get_by_role("menu", name="Pages").get_by_role("link", name=name, exact=True)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    """Polls ``check`` until it is truthy; fails saying ``what`` did not happen within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.2)


def forced_start(page: Page) -> tuple[int, str]:
    """What the gateway answers the page's own session when it starts SCRIPT by hand (no control used)."""
    return tuple(page.evaluate(
        """async (name) => {
            const r = await fetch(`/api/v1/scripts/${name}/runs`, {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
            return [r.status, await r.text()];
        }""",
        SCRIPT,
    ))


def runs_of_script(bed: GatewayBed, keycloak) -> list[str]:
    """SCRIPT's run ids, as an admin (whom no rule narrows) lists them."""
    reply = httpx.get(f"{bed.url}/api/v1/runs", params={"script": SCRIPT, "limit": 500}, headers=bearer(keycloak, "adam"), timeout=30)
    assert reply.status_code == 200, reply.text
    return [run["run_id"] for run in reply.json()]


def test_an_author_adds_a_script_in_the_editor_and_diffs_two_versions(logged_in) -> None:
    page = logged_in("anna")
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
    menu(page, "Scripts").click()
    page.get_by_label("Search scripts", exact=True).fill(SCRIPT)  # the suite's catalog holds more than a page of scripts
    page.get_by_role("link", name=SCRIPT, exact=True).wait_for()
    shot(page, "scripts")
    page.get_by_role("link", name=SCRIPT, exact=True).click()  # its page opens from the list
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


def test_an_operator_runs_watches_and_stops_and_the_remote_process_is_gone(console_bed, logged_in, ssh_server) -> None:
    page = logged_in("otto")
    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_label("Arguments (one per line)", exact=True).fill("short")
    assert not page.get_by_role("button", name="Push a new version…", exact=True).is_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    RUNS["short"] = page.url.rsplit("/", 1)[1]
    page.get_by_test_id("output").get_by_text("console run short").wait_for()
    page.get_by_test_id("run-state").get_by_text("COMPLETED").wait_for()
    assert page.get_by_test_id("exit-code").inner_text() == "0"
    assert page.get_by_role("link", name="Open in the Prefect UI", exact=True).get_attribute("href").startswith("/prefect/runs/flow-run/")
    shot(page, "run-completed")

    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_label("Arguments (one per line)", exact=True).fill("long")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    page.get_by_test_id("output").get_by_text("console run long").wait_for()
    eventually(lambda: alive(ssh_server, f"sleep {SLEEP}"), 30, "the long run's process showing on the host")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_role("button", name="Stop", exact=True).last.click()  # the confirmation
    page.get_by_test_id("run-state").get_by_text("CANCELLED").wait_for(timeout=90_000)
    eventually(lambda: not alive(ssh_server, f"sleep {SLEEP}"), 30, "the remote process ending after the stop")
    assert not page.get_by_role("button", name="Stop", exact=True).is_visible()
    shot(page, "run-stopped")
    menu(page, "Runs").click()
    page.get_by_role("link", name=SCRIPT, exact=True).first.wait_for()
    shot(page, "runs")


def test_a_log_search_finds_the_line_a_run_printed_in_elasticsearch(console_bed, logged_in) -> None:
    assert "short" in RUNS, "the operator's run did not start"
    page = logged_in("viola")
    menu(page, "Logs").click()
    page.get_by_label("Text", exact=True).fill("short")
    page.get_by_label("Script", exact=True).fill(SCRIPT)
    hit = page.get_by_role("row").filter(has_text="console run short")
    deadline = time.monotonic() + 60  # the worker ships lines while they are printed; Elasticsearch shows them within ~1 s
    while not hit.count():
        assert time.monotonic() < deadline, "the run's line never showed in the log search"
        with page.expect_response(lambda r: "/api/v1/logs/search" in r.url) as answer:
            page.get_by_role("button", name="Search", exact=True).click()
        assert answer.value.status == 200, answer.value.text()
        page.get_by_text("matching lines").wait_for()
    assert page.get_by_text("1 matching lines").is_visible()  # "long" is not matched, nor other scripts' lines
    assert SCRIPT in hit.inner_text() and HOST in hit.inner_text()
    shot(page, "logs")
    hit.get_by_role("link", name=RUNS["short"][:8], exact=True).click()
    page.wait_for_url(f"**/runs/{RUNS['short']}")
    page.get_by_test_id("output").get_by_text("console run short").wait_for()


def test_a_viewer_sees_no_run_or_stop_controls_and_a_forced_request_is_refused(console_bed, logged_in, keycloak) -> None:
    page = logged_in("viola")
    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_role("tab", name="Versions", exact=True).wait_for()
    assert not page.get_by_role("tab", name="Run", exact=True).is_visible()
    assert not page.get_by_role("button", name="Push a new version…", exact=True).is_visible()
    page.goto(f"{console_bed.url}/runs/{RUNS['short']}")
    page.get_by_test_id("run-state").get_by_text("COMPLETED").wait_for()
    assert not page.get_by_role("button", name="Stop", exact=True).is_visible()
    assert not menu(page, "Access").is_visible()
    before = runs_of_script(console_bed, keycloak)
    status, text = forced_start(page)
    assert status == 403 and "sms-viewer" in text, text
    assert runs_of_script(console_bed, keycloak) == before  # nothing was started


@pytest.fixture
def narrowing_rules_removed(console_bed, keycloak) -> Iterator[None]:
    """However the test ends, no rule narrowing paula to ELSEWHERE outlives it (the catalog is shared)."""
    yield
    rules = httpx.get(f"{console_bed.url}/api/v1/access-rules", headers=bearer(keycloak, "adam"), timeout=30).json()
    for rule in rules:
        if rule["subject"] == "paula" and rule["script_glob"] == ELSEWHERE:
            httpx.delete(f"{console_bed.url}/api/v1/access-rules/{rule['id']}", headers=bearer(keycloak, "adam"), timeout=30)


def scripts_listed(page: Page, url: str) -> list[str]:
    """Opens the Scripts page and returns the names the gateway listed to it."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/scripts") and r.request.method == "GET") as answer:
        page.goto(f"{url}/scripts")
    assert answer.value.status == 200, answer.value.text()
    return [script["name"] for script in answer.value.json()]


def test_an_admin_narrows_a_user_whose_console_then_no_longer_offers_the_script(
        console_bed, logged_in, keycloak, narrowing_rules_removed) -> None:
    paula = logged_in("paula")  # sms-operator: before the rule she may read and run SCRIPT
    assert SCRIPT in scripts_listed(paula, console_bed.url)
    paula.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    paula.get_by_role("tab", name="Run", exact=True).wait_for()

    adam = logged_in("adam")
    menu(adam, "Access").click()
    adam.get_by_label("Subject", exact=True).fill("paula")
    actions = adam.get_by_role("combobox", name="Actions", exact=True)
    actions.click()  # its list opens on "read", chosen already; the keyboard takes the next two
    for _ in ("start", "stop"):
        actions.press("ArrowDown")
        actions.press("Enter")
    actions.press("Escape")
    adam.get_by_label("Scripts (glob)", exact=True).fill(ELSEWHERE)
    adam.get_by_role("button", name="Add rule", exact=True).click()
    rule = adam.get_by_role("row").filter(has_text=ELSEWHERE)
    expect(rule).to_contain_text("user paula")
    expect(rule.get_by_role("cell").nth(1)).to_have_text(re.compile(r"read\s*start\s*stop"))
    adam.get_by_label("User to preview", exact=True).fill("paula")  # as an sms-operator (the default)
    adam.get_by_role("button", name="Preview", exact=True).click()
    preview = adam.get_by_test_id("access-preview")
    for action in ("read", "start", "stop"):  # columns: action, allowed, scripts, hosts
        cells = preview.get_by_role("row").filter(has=adam.get_by_role("cell", name=action, exact=True)).get_by_role("cell")
        expect(cells.nth(2)).to_have_text("none")  # no script matches ELSEWHERE
    shot(adam, "access-rules")

    # Her console: the gateway lists her no SCRIPT, and its page says why instead of offering a run.
    assert SCRIPT not in scripts_listed(paula, console_bed.url)
    paula.get_by_label("Search scripts", exact=True).fill(SCRIPT)
    expect(paula.get_by_role("link", name=SCRIPT, exact=True)).to_have_count(0)
    paula.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    expect(paula.get_by_role("alert")).to_contain_text("only as access rules allow")
    expect(paula.get_by_role("tab")).to_have_count(0)  # neither Run nor Versions
    shot(paula, "narrowed-script")

    # Forced through her console session: refused, and no run was made.
    before = runs_of_script(console_bed, keycloak)
    status, text = forced_start(paula)
    assert status == 403 and "paula may start only as access rules allow" in text, text
    assert runs_of_script(console_bed, keycloak) == before

    # The admin removes the rule in the console: her console offers the run again.
    rule.get_by_role("button", name="Remove", exact=True).click()
    adam.get_by_role("button", name="OK", exact=True).click()  # the confirmation
    expect(rule).to_have_count(0)
    paula.reload()
    paula.get_by_role("tab", name="Run", exact=True).wait_for()


def sha256_fingerprint(key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a ``type base64`` public key line."""
    digest = hashlib.sha256(base64.b64decode(key_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_row(page: Page, name: str) -> Locator:
    """Host ``name``'s row in the Hosts page, found through its search box."""
    page.get_by_label("Search hosts", exact=True).fill(name)
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def test_an_admin_trusts_a_new_hosts_key_on_first_use_and_the_host_check_then_passes(
        console_bed, logged_in, keycloak, ssh_server) -> None:
    page = logged_in("adam")
    unpinned = f"{HOST}-tofu"
    login = login_of(ssh_server)
    menu(page, "Hosts").click()
    page.get_by_role("button", name="Add host", exact=True).click()
    drawer = page.get_by_role("dialog").filter(has_text="Add a host")
    drawer.get_by_label("Name", exact=True).fill(unpinned)
    drawer.get_by_label("Address", exact=True).fill(login["address"])
    drawer.get_by_label("Port", exact=True).fill(str(login["port"]))
    drawer.get_by_label("Account", exact=True).fill(login["username"])
    drawer.get_by_label("Private key", exact=True).fill(login["private_key"])
    drawer.get_by_role("button", name="Add host", exact=True).click()
    expect(drawer).to_be_hidden()
    row = host_row(page, unpinned)
    expect(row).to_contain_text("not trusted")

    # Before trust a run there fails at the handshake: nothing ran on the host.
    page.goto(f"{console_bed.url}/scripts/{SCRIPT}")
    page.get_by_label("Arguments (one per line)", exact=True).fill("long")
    page.get_by_label("Host (optional)", exact=True).fill(unpinned)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    page.get_by_test_id("run-state").get_by_text("FAILED").wait_for(timeout=90_000)
    expect(page.get_by_text(re.compile(r"host key of .* is not trusted")).first).to_be_visible()
    expect(page.get_by_test_id("output")).not_to_contain_text("console run long")
    assert not alive(ssh_server, f"sleep {SLEEP}")
    shot(page, "run-untrusted-host")

    # The Hosts page shows the key the host offers; once trusted, the check passes.
    menu(page, "Hosts").click()
    row = host_row(page, unpinned)
    row.get_by_role("button", name="Trust key…", exact=True).click()
    offered = page.get_by_role("dialog").filter(has_text=f"Trust the key {unpinned} presents?")
    shown = re.search(r"SHA256:[A-Za-z0-9+/]{43}", offered.inner_text())
    assert shown and shown.group() in {sha256_fingerprint(line) for line in ssh_server.host_public_keys}, offered.inner_text()
    shot(page, "hosts-trust")
    offered.get_by_role("button", name="Trust this key", exact=True).click()
    expect(offered).to_be_hidden()
    expect(row).to_contain_text("pinned")
    expect(row).not_to_contain_text("not trusted")
    row.get_by_role("button", name="Check", exact=True).click()
    checked = page.get_by_role("dialog").filter(has_text=f"Check of {unpinned}")
    expect(checked).to_contain_text('"usable": true')
    expect(checked).to_contain_text('"host_key": "match"')
    shot(page, "hosts")
    page.keyboard.press("Escape")
    expect(checked).to_be_hidden()
