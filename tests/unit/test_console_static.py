"""The gateway serves the console's build: cache headers, SPA fallback, CSP, and a clear page
when there is no build."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sms_plugin.gateway import console

ISSUER = "https://idp.example"


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<!doctype html><div id="root"></div>')
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("outside the build")
    monkeypatch.setenv("SMS_CONSOLE_DIR", str(tmp_path))
    return tmp_path


def client() -> TestClient:
    app = FastAPI()
    app.include_router(console.router(ISSUER))
    return TestClient(app)


def test_hashed_assets_are_cached_long_and_the_page_never(build: Path) -> None:
    asset = client().get("/assets/index-abc123.js")
    assert asset.status_code == 200 and asset.text == "console.log(1)"
    assert asset.headers["cache-control"] == console.IMMUTABLE
    page = client().get("/")
    assert page.status_code == 200 and 'id="root"' in page.text
    assert page.headers["cache-control"] == console.NO_CACHE


def test_client_routes_fall_back_to_the_page(build: Path) -> None:
    for path in ("/scripts/hello-bash", "/runs/1234", "/access?tab=audit"):
        reply = client().get(path)
        assert reply.status_code == 200 and 'id="root"' in reply.text, path
        assert reply.headers["content-type"].startswith("text/html")


def test_a_missing_asset_or_api_path_is_a_404_not_the_page(build: Path) -> None:
    assert client().get("/assets/index-old.js").status_code == 404
    assert client().get("/api/v1/no-such-thing").status_code == 404


def test_the_policy_allows_no_other_origin(build: Path) -> None:
    policy = client().get("/").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    for name in ("default-src", "script-src", "connect-src", "img-src", "font-src"):
        assert "http" not in directives[name] and "*" not in directives[name], name
    assert directives["script-src"] == "'self'"
    assert directives["form-action"] == f"'self' {ISSUER}"  # logout's redirect to the identity provider
    assert directives["frame-ancestors"] == "'none'"


def test_no_path_leaves_the_build(build: Path) -> None:
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        reply = client().get(path)
        assert "outside the build" not in reply.text, path


def test_without_a_build_the_page_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_CONSOLE_DIR", str(tmp_path / "none"))
    reply = client().get("/scripts")
    assert reply.status_code == 503
    assert "not built" in reply.text and "npm run build" in reply.text and 'href="/prefect/"' in reply.text
