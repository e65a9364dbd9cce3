"""What the console asks of the REST API beyond the CLI's verbs: script settings (``PATCH
/api/v1/scripts/{name}``), a cron preview, the caller's permissions and, for admins, what another
user may do. Judged, audited and errors mapped like every route of ``sms_plugin.gateway.api``.

A setting SMS will not take (unknown host, unknown time zone, a cron that is malformed, never fires or
fires more often than ``SMS_SCHEDULE_MIN_SECONDS``) is a 400 naming it; a body of the wrong shape is
FastAPI's 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sms_plugin import hosts as host_services
from sms_plugin import schedules
from sms_plugin import scripts as script_services
from sms_plugin.catalog import repository
from sms_plugin.catalog.spec import MAX_SECONDS
from sms_plugin.gateway.api import ERRORS, CallDep, HostName, Message, ScriptOut, _newest_number
from sms_plugin.gateway.principal import Principal
from sms_plugin.selectors import MAX_LENGTH as MAX_SELECTOR
from sms_plugin.gateway.rbac import ACTIONS, ANY, ROLE_ACTIONS, Action, capabilities, decide

router = APIRouter(prefix="/api/v1", responses={401: {"description": "Not authenticated"}})
REFUSALS = {**ERRORS, 400: {"model": Message, "description": "A setting SMS will not take (the reason names it)"}}

Selector = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SELECTOR)]
Cron = Annotated[str, StringConstraints(min_length=1, max_length=200)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100)]
UserName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")]
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


# ---------------------------------------------------------------- script settings


class SettingsIn(BaseModel):
    """The settings to change; a field left out stays as it is. ``host`` (one host) or ``targets`` (a
    host selector, docs/fleet.md) says where the script runs, each replacing the other. ``schedule``
    replaces the script's schedules with one cron (null: none), in ``timezone`` (default: the current
    schedules' zone, else UTC); ``timezone`` alone moves the current schedules to that zone.
    ``timeout_seconds`` null: none."""

    model_config = ConfigDict(extra="forbid")

    host: HostName | None = None
    targets: Selector | None = None
    schedule: Cron | None = None
    timezone: TimeZone | None = None
    timeout_seconds: int | None = Field(default=None, gt=0, le=MAX_SECONDS)
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay_seconds: int | None = Field(default=None, ge=0, le=MAX_SECONDS)
    single_instance: Literal["off", "queue", "reject"] | None = None
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[Tag] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _null_only_where_it_means_none(self) -> Self:
        nulled = sorted(f for f in self.model_fields_set - {"schedule", "timeout_seconds"} if getattr(self, f) is None)
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null: leave a field out to keep it")
        if {"host", "targets"} <= self.model_fields_set:
            raise ValueError("give host (one host) or targets (a host selector), not both")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


@router.patch("/scripts/{name}", tags=["scripts"], responses=REFUSALS)
async def change_settings(name: str, body: SettingsIn, c: CallDep) -> ScriptOut:
    """Change a script's settings (authors, on its current and its new host and tags); a new schedule,
    or a scheduled script moved, needs start there too. Prefect's deployment follows at once."""
    async with c.action("script.settings", "script", name) as detail:
        c.authorize("author")
        script = await c.catalog.aio.run(repository.get_script, name)
        await c.authorize_where_it_runs("author", script, detail)
        detail["given"] = sorted(body.model_fields_set)
        spec = await script_services.revised(script, body.changes())
        await c.authorize_where_it_runs("author", spec, detail)
        moved = await c.targets.script(spec) != await c.targets.script(script) or spec.targets != script.targets
        if spec.schedules and (moved or spec.columns()["schedules"] != script.schedules):
            await c.authorize_where_it_runs("start", spec, detail)  # a schedule starts the script
        change = await script_services.update(c.catalog, spec, author=c.principal.username)
        detail["changed"] = sorted(change.changed_fields)
        return ScriptOut.of(change.script, await _newest_number(c, change.script))


# ---------------------------------------------------------------- schedules


class SchedulePreviewOut(BaseModel):
    cron: str
    timezone: str
    explanation: str
    """The cron in words, e.g. "At 03:00 on Monday"."""
    next_runs: list[datetime]
    """In the schedule's time zone (UTC offset included)."""
    shortest_gap_seconds: int | None


@router.get("/schedules/preview", tags=["scripts"], responses=REFUSALS)
async def preview_schedule(
    c: CallDep,
    cron: Annotated[Cron, Query()],
    timezone: Annotated[TimeZone, Query()] = "UTC",
    count: Annotated[int, Query(ge=1, le=schedules.MAX_PREVIEW)] = 5,
) -> SchedulePreviewOut:
    """The next ``count`` run times of a cron schedule, or 400 saying why SMS would refuse it."""
    async with c.action("schedule.preview", "schedule", cron) as detail:
        c.authorize("read")
        detail["timezone"] = timezone
        preview = schedules.preview(cron, timezone, count)
        return SchedulePreviewOut(cron=preview.cron, timezone=preview.timezone, explanation=preview.explanation,
                                  next_runs=preview.next_runs, shortest_gap_seconds=preview.shortest_gap_seconds)


# ---------------------------------------------------------------- permissions


class PermissionsOut(BaseModel):
    username: str
    roles: list[str]
    """The caller's SMS roles (other Keycloak roles grant nothing here)."""
    groups: list[str]
    can: dict[str, bool]
    """Capability (``script.add``, ``run.start``, ``host.trust``...) → allowed somewhere; each request
    is still judged on its own script and host."""


def _sms_roles(principal: Principal) -> list[str]:
    return sorted(principal.roles & ROLE_ACTIONS.keys())


@router.get("/me/permissions", tags=["access rules"])
async def my_permissions(c: CallDep) -> PermissionsOut:
    """The caller's roles and what the console may offer them (the same policy the gateway enforces)."""
    async with c.action("permissions.show", "user", c.principal.username):
        who = c.principal
        return PermissionsOut(username=who.username, roles=_sms_roles(who), groups=sorted(who.groups),
                              can=capabilities(who, c.rules))


class ActionPreview(BaseModel):
    action: Action
    allowed: bool
    """Allowed somewhere (on the collection)."""
    reason: str
    scripts: list[str]
    """The scripts (on their own host) the user may do this to."""
    hosts: list[str]
    """The hosts the user may do this on."""


class AccessPreviewOut(PermissionsOut):
    actions: list[ActionPreview]


@router.get("/access/preview", tags=["access rules"], responses=ERRORS)
async def preview_access(
    c: CallDep,
    user: Annotated[UserName, Query()],
    role: Annotated[list[RoleName], Query(max_length=50)] = [],  # noqa: B006 - FastAPI copies defaults
    group: Annotated[list[RoleName], Query(max_length=200)] = [],  # noqa: B006
) -> AccessPreviewOut:
    """What ``user`` with these Keycloak roles and groups may do (admins): per action, the scripts and
    hosts, under today's access rules. Keycloak keeps roles and groups; the gateway cannot read another
    user's, so the caller gives them (``role=``, ``group=``, repeatable)."""
    async with c.action("access.preview", "user", user) as detail:
        c.authorize("admin")
        detail.update(roles=sorted(role), groups=sorted(group))
        who = Principal(subject="", username=user, roles=frozenset(role), groups=frozenset(group))
        scripts = await c.catalog.aio.run(repository.list_scripts)
        script_targets = [(s.name, await c.targets.script(s)) for s in scripts]
        host_targets = [(h.name, await c.targets.host(h.name)) for h in await host_services.listing()]
        actions = []
        for action in ACTIONS:
            overall = decide(who, action, ANY, c.rules)
            actions.append(ActionPreview(
                action=action, allowed=overall.allowed, reason=overall.reason,
                scripts=[n for n, t in script_targets if decide(who, action, t, c.rules).allowed],
                hosts=[n for n, t in host_targets if decide(who, action, t, c.rules).allowed],
            ))
        return AccessPreviewOut(username=user, roles=_sms_roles(who), groups=sorted(who.groups),
                                can=capabilities(who, c.rules), actions=actions)
