"""The web console (``console/``, built to ``console/dist``) served at ``/``.

- Hashed files under ``/assets/`` are cached for a year (their names change with their content);
  ``index.html`` is never cached, so a new build is picked up at the next page load.
- Any other path that is not a file (``/scripts/x``, ``/runs/…``) gets ``index.html``: the
  console's own router shows the page (SPA fallback). The gateway's other routes are matched first.
- Every answer carries a strict Content-Security-Policy: scripts, fonts, images and connections
  from the gateway's own origin only (styles also inline: Ant Design and CodeMirror inject them).
- Without a build, ``/`` explains how to build it (503), never a 500.

``SMS_CONSOLE_DIR`` names another build folder (default: ``console/dist`` of this checkout).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from sms_plugin.settings import current

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "console" / "dist"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self' {issuer}; "
    "frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache, no-store, must-revalidate"
_MISSING = (
    "<!doctype html><title>SMS console not built</title><h1>The SMS console is not built</h1>"
    "<p>Build it with <code>bash infra/bootstrap.sh</code> (or <code>cd console &amp;&amp; npm ci &amp;&amp; "
    "npm run build</code>). Meanwhile: <a href=\"/auth/login\">log in</a> · <a href=\"/prefect/\">Prefect UI</a> · "
    "<a href=\"/api/v1/docs\">REST API</a>.</p>"
)


def console_dir() -> Path:
    """Where the console's build is (``SMS_CONSOLE_DIR`` or ``console/dist``)."""
    return current().console.dist or DEFAULT_DIR


def _headers(cache: str, issuer: str) -> dict[str, str]:
    return {
        "Cache-Control": cache,
        # The logout form posts to the gateway, which redirects to the identity provider.
        "Content-Security-Policy": CONTENT_SECURITY_POLICY.format(issuer=issuer).replace(" ;", ";"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def router(issuer_origin: str = "") -> APIRouter:
    """The console's routes; register it last (it answers every GET path nothing else took)."""
    pages = APIRouter(include_in_schema=False)

    @pages.get("/{path:path}")
    async def console_file(path: str) -> Response:
        root = console_dir().resolve()
        index = root / "index.html"
        if not index.is_file():
            return HTMLResponse(_MISSING, status_code=503, headers=_headers(NO_CACHE, issuer_origin))
        if path.startswith(("api/", "auth/", "hooks/", "prefect/")):
            raise HTTPException(404, detail="not found")  # a mistyped API path is a 404, not the console
        candidate = (root / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(root):
            cache = IMMUTABLE if path.startswith("assets/") else NO_CACHE
            return FileResponse(candidate, headers=_headers(cache, issuer_origin))
        if path.startswith("assets/"):
            raise HTTPException(404, detail="no such console file")  # an old build's asset: not the page
        return FileResponse(index, media_type="text/html", headers=_headers(NO_CACHE, issuer_origin))

    return pages
