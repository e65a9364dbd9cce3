"""Host care in the REST API, as ``sms host check`` and ``sms host trust`` do it (admins only):
the key an SSH host shows now, trusting it by the fingerprint a person confirmed (trust on first
use, docs/hosts.md), the host check's result, and a host's labels. Audited like every route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sms_plugin import hosts as host_services
from sms_plugin.gateway.api import ERRORS, CallDep, HostName, HostOut, Label

router = APIRouter(prefix="/api/v1", responses={401: {"description": "Not authenticated"}})
Fingerprint = Annotated[str, StringConstraints(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")]
Name = Annotated[HostName, Path()]
"""A host name (a Prefect block name): anything else is a 422 before Prefect is asked."""


class HostKeyOut(BaseModel):
    """The key the host shows now; nothing is stored."""

    host: str
    key_type: str
    fingerprint: str
    """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -lf`` prints it on the server."""
    public_key: str


class TrustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fingerprint: Fingerprint
    """The fingerprint the person compared with the server's own (from ``GET .../host-key``)."""


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(max_length=100)


class HostCheckOut(BaseModel):
    usable: bool
    """SMS can run scripts there (reachable, logged in, key trusted, a POSIX sh where needed)."""
    check: host_services.HostCheck


def _key_out(name: str, key: host_services.ScannedKey) -> HostKeyOut:
    return HostKeyOut(host=name, key_type=key.key_type, fingerprint=key.fingerprint, public_key=key.line)


@router.get("/hosts/{name}/host-key", tags=["hosts"], responses=ERRORS)
async def show_host_key(name: Name, c: CallDep) -> HostKeyOut:
    """The key SSH host ``name`` shows now and its fingerprint (admins), read without logging in."""
    async with c.action("host.key", "host", name) as detail:
        c.authorize("admin")
        key = await host_services.scan_host_key(name)
        detail["fingerprint"] = key.fingerprint
        return _key_out(name, key)


@router.post("/hosts/{name}/trust", tags=["hosts"], responses=ERRORS)
async def trust_host(name: Name, body: TrustIn, c: CallDep) -> HostKeyOut:
    """Pin the key SSH host ``name`` shows, if it is still the one with the confirmed fingerprint
    (admins); 409 and nothing pinned if the host shows another key now."""
    async with c.action("host.trust", "host", name) as detail:
        c.authorize("admin")
        detail["fingerprint"] = body.fingerprint
        return _key_out(name, await host_services.trust_host_key(name, body.fingerprint))


@router.post("/hosts/{name}/check", tags=["hosts"], responses=ERRORS)
async def check_host(name: Name, c: CallDep) -> HostCheckOut:
    """Check a host as ``sms host check`` does (admins): reachable, login, host key, algorithms, shell,
    interpreters. A host problem is in the result (``usable`` false), not an error."""
    async with c.action("host.check", "host", name) as detail:
        c.authorize("admin")
        result = await host_services.check(name)
        detail.update(usable=result.usable, problems=len(result.problems))
        return HostCheckOut(usable=result.usable, check=result)


@router.put("/hosts/{name}/labels", tags=["hosts"], responses=ERRORS)
async def replace_labels(name: Name, body: LabelsIn, c: CallDep) -> HostOut:
    """Give a host exactly these labels (admins): access rules and selectors pick hosts by them."""
    async with c.action("host.labels", "host", name) as detail:
        c.authorize("admin")
        detail["labels"] = body.labels
        return HostOut.of(await host_services.set_labels(name, body.labels))
