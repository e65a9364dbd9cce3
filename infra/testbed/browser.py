"""Debian's Chromium driven by Playwright (browsers cannot be downloaded here), and a console user
logged in through Keycloak's own form. ``SMS_TEST_CHROMIUM`` names another Chromium binary.

Example::

    with chromium() as browser:
        page = log_in(browser, gateway.url, "otto")   # password "otto-pw", as in the demo realm
        page.goto(f"{gateway.url}/runs")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("SMS_TEST_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1440, "height": 900}


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the block."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: install Debian's chromium (infra/bootstrap.sh does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser: Browser, url: str, username: str, *, timeout_ms: float = 60_000) -> Page:
    """A page of a new browser context, logged in to the console at ``url`` through Keycloak's form
    (password: ``username`` + "-pw"); it shows the console once the header names the user."""
    page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
    page.set_default_timeout(timeout_ms)
    page.goto(f"{url}/")
    page.get_by_role("link", name="Log in", exact=True).click()
    page.locator("#username").fill(username)
    page.locator("#password").fill(f"{username}-pw")
    page.locator("#kc-login").click()
    page.get_by_test_id("who").get_by_text(username).wait_for()
    return page
