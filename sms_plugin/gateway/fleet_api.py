"""Fleet targets in the REST API: host groups (``/api/v1/host-groups``) and the judge of a start on
a selection (``/api/v1/selections/judge``). Viewers read groups, admins change them; a selector
that cannot be parsed is a 400 naming its column (docs/fleet.md).

The judge answers what a start on a selection would be told, host by host, all or nothing
(``rbac.decide_selection``), as ``POST /api/v1/scripts/{name}/runs`` with ``hosts`` judges it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sms_plugin import host_groups
from sms_plugin.catalog import get_script
from sms_plugin.gateway.api import ERRORS, CallDep, Message, Name
from sms_plugin.selectors import GROUP_NAME, MAX_LENGTH

router = APIRouter(prefix="/api/v1", responses={401: {"description": "Not authenticated"}})
SELECTOR_ERRORS = {**ERRORS, 400: {"model": Message, "description": "The selector is malformed (its column is named)"}}

GroupName = Annotated[str, StringConstraints(pattern=f"^{GROUP_NAME.pattern}$")]
SelectorText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LENGTH)]


class HostGroupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: SelectorText
    description: str = Field(default="", max_length=10_000)


class HostGroupIn(HostGroupSettings):
    name: GroupName


class HostGroupOut(HostGroupIn):
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: host_groups.HostGroupInfo) -> HostGroupOut:
        return cls(name=info.name, selector=info.selector, description=info.description, created_by=info.created_by,
                   created_at=info.created_at, updated_at=info.updated_at)


@router.get("/host-groups", tags=["host groups"], responses=ERRORS)
async def list_host_groups(c: CallDep) -> list[HostGroupOut]:
    async with c.action("host-group.list", "host-group"):
        c.authorize("read")
        return [HostGroupOut.of(info) for info in await c.catalog.aio.run(host_groups.listing)]


@router.get("/host-groups/{name}", tags=["host groups"], responses=ERRORS)
async def show_host_group(name: Annotated[GroupName, Path()], c: CallDep) -> HostGroupOut:
    async with c.action("host-group.show", "host-group", name):
        c.authorize("read")
        return HostGroupOut.of(await c.catalog.aio.run(host_groups.show, name))


@router.post("/host-groups", tags=["host groups"], status_code=201, responses=SELECTOR_ERRORS)
async def add_host_group(body: HostGroupIn, c: CallDep) -> HostGroupOut:
    """Add a host group (admins); its selector may name other groups, never lead back to itself."""
    async with c.action("host-group.add", "host-group", body.name) as detail:
        c.authorize("admin")
        detail["selector"] = body.selector
        info = await c.catalog.aio.run(
            host_groups.add, body.name, body.selector, body.description, author=c.principal.username
        )
        return HostGroupOut.of(info)


@router.put("/host-groups/{name}", tags=["host groups"], responses=SELECTOR_ERRORS)
async def replace_host_group(name: Annotated[GroupName, Path()], body: HostGroupSettings, c: CallDep) -> HostGroupOut:
    async with c.action("host-group.replace", "host-group", name) as detail:
        c.authorize("admin")
        detail["selector"] = body.selector
        info = await c.catalog.aio.run(
            host_groups.replace, name, body.selector, body.description, author=c.principal.username
        )
        return HostGroupOut.of(info)


@router.delete("/host-groups/{name}", tags=["host groups"], status_code=204, responses=ERRORS)
async def remove_host_group(name: Annotated[GroupName, Path()], c: CallDep) -> None:
    """Remove a host group (admins); refused (409) while another group refers to it."""
    async with c.action("host-group.remove", "host-group", name):
        c.authorize("admin")
        await c.catalog.aio.run(host_groups.remove, name, author=c.principal.username)


class JudgeIn(BaseModel):
    """A start (or stop) of ``script`` on every host ``selector`` picks; without a script, on the hosts alone."""

    model_config = ConfigDict(extra="forbid")

    selector: SelectorText
    action: Literal["start", "stop"] = "start"
    script: Name | None = None


class JudgeOut(BaseModel):
    selector: str
    action: str
    script: str | None
    hosts: list[str]
    """Every host the selector picks, each one allowed."""
    reason: str


@router.post("/selections/judge", tags=["host groups"], responses=SELECTOR_ERRORS)
async def judge_selection(body: JudgeIn, c: CallDep) -> JudgeOut:
    """Would the caller be allowed ``action`` on every selected host? 200 naming them, or 403 naming the
    hosts that refuse the selection as a whole. Nothing is started."""
    async with c.action("selection.judge", "selection", body.selector[:200]) as detail:
        detail.update(script=body.script, action=body.action)
        script = await c.catalog.aio.run(get_script, body.script) if body.script else None
        hosts = await c.authorize_selection(body.action, body.selector, script, detail)
        return JudgeOut(selector=body.selector, action=body.action, script=body.script, hosts=hosts,
                        reason=f"{c.principal.username} may {body.action} on all {len(hosts)} selected host(s)")
