"""The SMS REST API, ``/api/v1``: a face over the same services as the CLI and the SDK.

Every operation authorizes the caller with ``rbac.decide`` (roles, narrowed by the catalog's
access rules) and writes one audit event: ``ok``, ``denied`` (403, the reason in the body) or
``error`` (404 not found, 409 conflict, 422 invalid input, 502 Prefect or a host failed, 503 a
monitoring back end is down).
List operations return only the items the caller may read.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from prefect.exceptions import PrefectException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin import selection
from sms_plugin.catalog import Catalog, ScriptSpec, repository
from sms_plugin.catalog import access as rows
from sms_plugin.catalog.models import AccessRule, Script, ScriptVersion, Webhook
from sms_plugin.catalog.spec import NAME_PATTERN
from sms_plugin.errors import Conflict, InvalidInput, NotFound, ServiceError, SMSError, TransportError, Unavailable
from sms_plugin.gateway import audit
from sms_plugin.gateway.auth import require_principal
from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import ANY, RULE_ACTIONS, Action, Rule, SubjectKind, Target, decide, decide_selection
from sms_plugin.gateway.targets import Targets, load_rules
from sms_plugin.gateway.signing import ARGUMENT_PATTERN, check_argument_pattern, seal
from sms_plugin.host_kinds import HOST_NAME_PATTERN, LABEL_PATTERN, HostRequest, from_request
from sms_plugin.parameters import PARAMETER_NAME
from sms_plugin.run_results import RunSummary
from sms_plugin.selectors import MAX_LENGTH as MAX_SELECTOR

TRIGGER = "api"


class Denied(Exception):
    """The policy said no; the message is its reason."""


def catalog_of(request: Request) -> Catalog:
    """The app's catalog (``app.state.catalog``), opened and migrated on first use."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is None:
        catalog = Catalog()
        catalog.upgrade()
        request.app.state.catalog = catalog
    return catalog


class Call:
    """One API request: the caller, the catalog, and the policy's inputs (read once)."""

    def __init__(self, request: Request, principal: Principal, rules: list[Rule]) -> None:
        self.principal = principal
        self.caller = audit.Caller.of(principal, request)
        self.catalog = catalog_of(request)
        self.targets = Targets(self.catalog)
        self.rules = rules

    def allows(self, action: Action, target: Target) -> bool:
        return decide(self.principal, action, target, self.rules).allowed

    async def authorize_selection(
        self, action: Action, selector: str, script: Script | ScriptSpec | None, detail: dict[str, Any]
    ) -> list[str]:
        """The names of the hosts ``selector`` picks, if the caller may ``action`` (``script``) on every
        one; Denied naming the refused hosts otherwise, or when it picks none (``rbac.decide_selection``).
        The audit ``detail`` gets the selector, the number of hosts and the refused ones."""
        self.authorize(action)
        detail["selector"] = selector
        hosts = await selection.selected_hosts(self.catalog, selector)
        if script is None:
            targets = [await self.targets.host(host.name) for host in hosts]
        else:
            targets = [await self.targets.script(script, host.name) for host in hosts]
        decision = decide_selection(self.principal, action, targets, self.rules)
        detail.update(hosts=len(hosts), refused=list(decision.refused))
        if not decision.allowed:
            raise Denied(decision.reason)
        return [host.name for host in hosts]

    async def authorize_where_it_runs(self, action: Action, script: Script | ScriptSpec, detail: dict[str, Any]) -> None:
        """Raise Denied unless the caller may ``action`` ``script`` where it runs: its host, or every host
        its ``targets`` selector picks now (what its schedules and webhooks start, unjudged, with its content)."""
        if script.targets:
            await self.authorize_selection(action, script.targets, script, detail)
        else:
            self.authorize(action, await self.targets.script(script))

    def authorize(self, action: Action, target: Target = ANY) -> None:
        """Raise Denied unless the caller may ``action`` the collection and then ``target``."""
        for scope in dict.fromkeys((ANY, target)):
            decision = decide(self.principal, action, scope, self.rules)
            if not decision.allowed:
                raise Denied(decision.reason)

    async def _record(self, action: str, object_type: str, object_name: str, outcome: str, detail: dict[str, Any]) -> None:
        await audit.record(
            self.catalog, self.caller, action=action, object_type=object_type, object_name=object_name,
            outcome=outcome, detail=detail,
        )

    @asynccontextmanager
    async def action(self, name: str, object_type: str, object_name: str = "") -> AsyncIterator[dict[str, Any]]:
        """Audit the block as action ``api.<name>``; turn refusals into 4xx/502. Yields the event's detail.

        The ``api.`` event records the request (who, from where, outcome); changes to scripts also
        get the catalog's own event (e.g. ``script.add``), as from the CLI."""
        name = f"api.{name}"
        detail: dict[str, Any] = {}
        status, message = 0, ""
        try:
            yield detail
        except Denied as denial:
            status, message = 403, str(denial)
        except NotFound as error:
            status, message = 404, str(error)
        except Conflict as error:
            status, message = 409, str(error)
        except InvalidInput as error:
            status, message = 422, str(error)
        except TransportError as error:
            status, message = 502, f"the host failed: {error}"
        except Unavailable as error:
            status, message = 503, str(error)
        except ServiceError as error:
            status, message = 502, str(error)
        except SMSError as error:
            status, message = 400, str(error)
        except (httpx.HTTPError, PrefectException) as error:
            status, message = 502, f"the Prefect API failed: {error}"
        except Exception as error:
            detail["error"] = f"internal error: {type(error).__name__}"
            await self._record(name, object_type, object_name, "error", detail)
            raise
        if status:
            detail["reason" if status == 403 else "error"] = message
        outcome = "ok" if not status else "denied" if status == 403 else "error"
        if outcome != "ok" or name not in QUIET_READS:
            await self._record(name, object_type, object_name or detail.get("object_name", ""), outcome, detail)
        if status:
            raise HTTPException(status, message)


QUIET_READS = frozenset(f"api.{name}" for name in (
    "host.list", "host.show", "host-group.list", "host-group.show", "selection.judge", "script.list", "script.show",
    "version.list", "version.show", "version.diff", "run.list", "rule.list", "rule.show",
    "webhook.list", "webhook.show", "webhook.deliveries", "webhook.refusals", "schedule.preview",
    "permissions.show", "access.preview",
))
"""Reads of the catalog that are audited only when refused or failed: the console polls them, and an
audit trail of every poll would bury the changes. Reads of output, logs and the audit trail itself, and
reads that contact a host (host key, check), are always audited; so is a run's detail (``run.show``),
which carries the tail of its output."""


async def call(request: Request, principal: Annotated[Principal, Depends(require_principal)]) -> Call:
    return Call(request, principal, await load_rules(catalog_of(request)))


CallDep = Annotated[Call, Depends(call)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]
HostName = Annotated[str, StringConstraints(pattern=HOST_NAME_PATTERN)]
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]

router = APIRouter(prefix="/api/v1", responses={401: {"description": "Not authenticated"}})


class Message(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Message, "description": text}
    for code, text in ((403, "Forbidden (the reason says why)"), (404, "Not found"), (409, "Conflict"), (502, "Prefect or a host failed"))
}

# ---------------------------------------------------------------- hosts


class HostOut(BaseModel):
    """A host of any kind: what every kind has, and ``settings``, the kind's fields without its secrets."""

    name: str
    kind: str
    where: str
    pinned_keys: int
    legacy: bool
    labels: list[str]
    admins_only: bool
    max_parallel_sessions: int
    settings: dict[str, Any]

    @classmethod
    def of(cls, info: host_services.HostInfo) -> HostOut:
        return cls(name=info.name, kind=info.kind, where=info.where, pinned_keys=info.pinned_keys,
                   legacy=info.legacy, labels=list(info.labels), admins_only=info.admins_only,
                   max_parallel_sessions=info.max_parallel_sessions, settings=info.settings)


async def _host_info(name: str) -> host_services.HostInfo:
    for info in await host_services.listing():
        if info.name == name:
            return info
    raise NotFound(f"no host named {name!r}")


@router.get("/hosts", tags=["hosts"], responses={400: {"model": Message, "description": "Malformed selector"}})
async def list_hosts(
    c: CallDep, select: Annotated[str | None, Query(min_length=1, max_length=MAX_SELECTOR)] = None
) -> list[HostOut]:
    """The hosts the caller may read; with ``select``, those the host selector picks (docs/fleet.md)."""
    async with c.action("host.list", "host") as detail:
        c.authorize("read")
        if select is not None:
            detail["select"] = select
        infos = await (host_services.listing() if select is None else selection.selected_hosts(c.catalog, select))
        return [HostOut.of(i) for i in infos if c.allows("read", Target(host=i.name, host_labels=frozenset(i.labels)))]


@router.get("/hosts/{name}", tags=["hosts"], responses=ERRORS)
async def show_host(name: str, c: CallDep) -> HostOut:
    async with c.action("host.show", "host", name):
        c.authorize("read")
        info = await _host_info(name)
        c.authorize("read", await c.targets.host(name))
        return HostOut.of(info)


@router.post("/hosts", tags=["hosts"], status_code=201, responses=ERRORS)
async def add_host(body: HostRequest, c: CallDep) -> HostOut:
    """Add (or with ``overwrite`` replace) a host of any kind (``kind``: ssh, local or windows, each
    with its own fields); admins only. SSH hosts must then be trusted."""
    async with c.action("host.add", "host", body.name) as detail:
        c.authorize("admin")
        detail.update(kind=body.kind, labels=body.labels)
        await host_services.add(body.name, from_request(body), overwrite=body.overwrite)
        return HostOut.of(await _host_info(body.name))


# ---------------------------------------------------------------- scripts and versions


class ScriptOut(ScriptSpec):
    model_config = ConfigDict(extra="ignore")

    newest_version: int | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, script: Script, newest_version: int | None) -> ScriptOut:
        spec = ScriptSpec.from_script(script).model_dump()
        return cls(**spec, newest_version=newest_version, created_at=script.created_at, updated_at=script.updated_at)


class ScriptIn(ScriptSpec):
    """A new script: its settings, and its content (version 1) unless it runs an original file."""

    content: str | None = Field(default=None, max_length=10_000_000)
    comment: str = Field(default="", max_length=10_000)

    def spec(self) -> ScriptSpec:
        return ScriptSpec.model_validate(self.model_dump(exclude={"content", "comment"}))


class VersionOut(BaseModel):
    number: int
    sha256: str
    author: str
    created_at: datetime
    comment: str

    @classmethod
    def of(cls, version: ScriptVersion) -> VersionOut:
        return cls(number=version.number, sha256=version.sha256, author=version.author,
                   created_at=version.created_at, comment=version.comment)


class VersionDetail(VersionOut):
    content: str

    @classmethod
    def of(cls, version: ScriptVersion) -> VersionDetail:
        return cls(**VersionOut.of(version).model_dump(), content=version.content)


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(max_length=10_000_000)
    comment: str = Field(default="", max_length=10_000)


class PushOut(BaseModel):
    created: bool
    """False when the content equals the newest version (nothing was stored)."""
    version: VersionOut


class DiffOut(BaseModel):
    script: str
    from_version: int
    to_version: int
    diff: str
    """A unified diff, empty when both versions are equal."""


async def _newest_number(c: Call, script: Script) -> int | None:
    if script.interpreter == "original":
        return None
    return (await c.catalog.aio.run(repository.get_version, script.name)).number


@router.get("/scripts", tags=["scripts"])
async def list_scripts(c: CallDep, tag: Annotated[str | None, Query(max_length=100)] = None) -> list[ScriptOut]:
    """The scripts the caller may read, optionally those with ``tag``."""
    async with c.action("script.list", "script"):
        c.authorize("read")
        scripts = await c.catalog.aio.run(repository.list_scripts, tag=tag)
        return [
            ScriptOut.of(s, await _newest_number(c, s)) for s in scripts if c.allows("read", await c.targets.script(s))
        ]


async def _readable_script(c: Call, name: str) -> Script:
    c.authorize("read")
    script = await c.catalog.aio.run(repository.get_script, name)
    c.authorize("read", await c.targets.script(script))
    return script


@router.get("/scripts/{name}", tags=["scripts"], responses=ERRORS)
async def show_script(name: str, c: CallDep) -> ScriptOut:
    async with c.action("script.show", "script", name):
        script = await _readable_script(c, name)
        return ScriptOut.of(script, await _newest_number(c, script))


@router.post("/scripts", tags=["scripts"], status_code=201, responses=ERRORS)
async def add_script(body: ScriptIn, c: CallDep) -> ScriptOut:
    """Add a script (authors); it becomes the Prefect deployment ``run-script/NAME``."""
    async with c.action("script.add", "script", body.name) as detail:
        spec = body.spec()
        await c.authorize_where_it_runs("author", spec, detail)
        if spec.schedules:  # a schedule starts the script: it needs start too
            await c.authorize_where_it_runs("start", spec, detail)
        detail.update(interpreter=spec.interpreter, host=spec.host)
        script = await script_services.add(c.catalog, spec, body.content, author=c.principal.username, comment=body.comment)
        return ScriptOut.of(script, await _newest_number(c, script))


@router.post("/scripts/{name}/versions", tags=["scripts"], responses=ERRORS)
async def push_version(name: str, body: VersionIn, c: CallDep) -> PushOut:
    """Store new content as the script's next version (authors); equal content stores nothing."""
    async with c.action("script.push", "script", name) as detail:
        c.authorize("author")
        script = await c.catalog.aio.run(repository.get_script, name)
        await c.authorize_where_it_runs("author", script, detail)
        change = await script_services.update(
            c.catalog, ScriptSpec.from_script(script), body.content, author=c.principal.username, comment=body.comment
        )
        version = change.new_version or await c.catalog.aio.run(repository.get_version, name)
        detail.update(version=version.number, created=change.new_version is not None)
        return PushOut(created=change.new_version is not None, version=VersionOut.of(version))


@router.delete("/scripts/{name}", tags=["scripts"], status_code=204, responses=ERRORS)
async def remove_script(name: str, c: CallDep) -> None:
    """Remove a script and its deployment (authors); its run records and audit trail stay."""
    async with c.action("script.remove", "script", name) as detail:
        c.authorize("author")
        await c.authorize_where_it_runs("author", await c.catalog.aio.run(repository.get_script, name), detail)
        await script_services.remove(c.catalog, name, author=c.principal.username)


@router.get("/scripts/{name}/versions", tags=["scripts"], responses=ERRORS)
async def list_versions(name: str, c: CallDep) -> list[VersionOut]:
    """A script's versions, newest first."""
    async with c.action("version.list", "script", name):
        await _readable_script(c, name)
        return [VersionOut.of(v) for v in await c.catalog.aio.run(repository.list_versions, name)]


@router.get("/scripts/{name}/versions/{number}", tags=["scripts"], responses=ERRORS)
async def show_version(name: str, number: Annotated[int, Path(ge=1, le=2**31)], c: CallDep) -> VersionDetail:
    async with c.action("version.show", "script", name) as detail:
        detail["version"] = number
        await _readable_script(c, name)
        return VersionDetail.of(await c.catalog.aio.run(repository.get_version, name, number))


@router.get("/scripts/{name}/diff", tags=["scripts"], responses=ERRORS)
async def diff_versions(
    name: str,
    c: CallDep,
    from_version: Annotated[int, Query(alias="from", ge=1, le=2**31)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=2**31)],
) -> DiffOut:
    """The unified diff from version ``from`` to version ``to``."""
    async with c.action("version.diff", "script", name) as detail:
        detail.update(from_version=from_version, to_version=to_version)
        await _readable_script(c, name)
        old = await c.catalog.aio.run(repository.get_version, name, from_version)
        new = await c.catalog.aio.run(repository.get_version, name, to_version)
        lines = difflib.unified_diff(
            old.content.splitlines(keepends=True), new.content.splitlines(keepends=True),
            fromfile=f"{name} v{from_version}", tofile=f"{name} v{to_version}",
        )
        return DiffOut(script=name, from_version=from_version, to_version=to_version, diff="".join(lines))


# ---------------------------------------------------------------- runs


class StartIn(BaseModel):
    """Arguments replace the script's default arguments; ``host`` and ``version`` override its own.
    A script that declares parameters takes ``parameters`` by name instead of ``args``; ``env``
    may set only the variables the script allows. ``hosts`` (a host selector) makes it a fleet run
    on every host it picks, with ``policy`` (docs/fleet.md); so does a script's own ``targets``.
    Every picked host is judged, and exactly those are handed to the flow."""

    model_config = ConfigDict(extra="forbid")

    args: list[Annotated[str, StringConstraints(max_length=100_000)]] | None = Field(default=None, max_length=1000)
    parameters: dict[Annotated[str, StringConstraints(max_length=64)], str | int | float | bool] | None = Field(
        default=None, max_length=100
    )
    env: dict[Annotated[str, StringConstraints(max_length=200)], Annotated[str, StringConstraints(max_length=100_000)]] | None = Field(
        default=None, max_length=100
    )
    host: HostName | None = None
    hosts: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SELECTOR)] | None = None
    policy: dict[Annotated[str, StringConstraints(max_length=64)], str | int | float | bool | None] | None = Field(
        default=None, max_length=20
    )
    version: int | None = Field(default=None, ge=1, le=2**31)


class StartOut(BaseModel):
    run_id: str


class StopOut(BaseModel):
    run_id: str
    state: str


class HostRunOut(BaseModel):
    """One host's part of a run: ``pending``, ``running``, or how it ended."""

    host: str
    state: str
    exit_code: int | None
    seconds: float | None
    message: str


class RunDetail(BaseModel):
    run_id: str
    script: str
    host: str
    """The run's host; empty for a fleet run (see ``hosts``)."""
    state: str
    """Prefect's state type: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, CRASHED..."""
    message: str
    exit_code: int | None
    output_tail: list[str]
    hosts: list[HostRunOut] = []
    """Per host, in name order, once the run has started on them."""


class LogLineOut(BaseModel):
    timestamp: datetime
    level: str
    message: str
    stream: str | None = None
    """``stdout`` or ``stderr`` for the script's output; null for SMS's own messages about the run."""


@router.post("/scripts/{name}/runs", tags=["runs"], status_code=201, responses=ERRORS)
async def start_run(name: str, body: StartIn, c: CallDep) -> StartOut:
    """Start the script (operators); returns the run id at once."""
    async with c.action("run.start", "script", name) as detail:
        c.authorize("start")
        if body.host is not None and body.hosts is not None:
            raise InvalidInput("give either 'host' or 'hosts' (a selector), not both")
        script = await c.catalog.aio.run(repository.get_script, name)
        selector = body.hosts or (script.targets if body.host is None else None)  # what runs is what is judged
        hosts = None
        if selector is None:
            c.authorize("start", await c.targets.script(script, body.host))
        else:
            hosts = await c.authorize_selection("start", selector, script, detail)
        detail.update(parameters=sorted(body.parameters or {}), env=sorted(body.env or {}))  # names, never values
        run_id = await run_services.start(
            c.catalog, name, args=body.args, env=body.env, host=body.host, hosts=hosts, policy=body.policy,
            version=body.version, parameters=body.parameters, trigger=TRIGGER, user=c.principal.username,
        )
        detail.update(run_id=run_id, host=body.host, policy=body.policy, version=body.version)
        return StartOut(run_id=run_id)


async def _run_target(c: Call, action: Action, run_id: str) -> tuple[str, list[str]]:
    """The run's script and hosts, if the caller may ``action`` on the run on every one of its hosts."""
    c.authorize(action)
    script, hosts = await run_services.script_and_hosts(c.catalog, run_id)
    targets = [await c.targets.run(script, host) for host in hosts]
    if len(targets) == 1:
        c.authorize(action, targets[0])
        return script, hosts
    decision = decide_selection(c.principal, action, targets, c.rules)
    if not decision.allowed:
        raise Denied(decision.reason)
    return script, hosts


@router.post("/runs/{run_id}/stop", tags=["runs"], responses=ERRORS)
async def stop_run(run_id: str, c: CallDep) -> StopOut:
    """Stop a run (operators): its remote process tree is killed."""
    async with c.action("run.stop", "run", run_id) as detail:
        detail["script"], _ = await _run_target(c, "stop", run_id)
        return StopOut(run_id=run_id, state=await run_services.stop(run_id))


@router.get("/runs", tags=["runs"])
async def list_runs_(
    c: CallDep, script: Annotated[str | None, Query(max_length=100)] = None, limit: Limit = 50
) -> list[RunSummary]:
    """Runs the caller may read, newest first (those that reached the flow)."""
    async with c.action("run.list", "run"):
        c.authorize("read")
        records = await c.catalog.aio.run(repository.list_runs, script_name=script, limit=limit)
        return [RunSummary.of(r) for r in records if c.allows("read", await c.targets.run(r.script_name, r.host))]


@router.get("/runs/{run_id}", tags=["runs"], responses=ERRORS)
async def show_run(run_id: str, c: CallDep) -> RunDetail:
    """A run's state, exit code and output tail."""
    async with c.action("run.show", "run", run_id):
        script, hosts = await _run_target(c, "read", run_id)
        result = await run_services.result(c.catalog, run_id)
        return RunDetail(run_id=run_id, script=script, host=hosts[0] if len(hosts) == 1 else "", state=result.state,
                         message=result.message, exit_code=result.exit_code, output_tail=result.output_tail,
                         hosts=[HostRunOut(**asdict(host)) for host in result.hosts])


@router.get("/runs/{run_id}/logs", tags=["runs"], responses=ERRORS)
async def run_logs(
    run_id: str,
    c: CallDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    host: Annotated[str | None, Query(pattern=HOST_NAME_PATTERN)] = None,
) -> list[LogLineOut]:
    """A run's log lines so far, oldest first: at most ``limit``, after the first ``offset``; with
    ``host``, that host's lines of a fleet run only."""
    async with c.action("run.logs", "run", run_id):
        await _run_target(c, "read", run_id)
        lines: list[LogLineOut] = []
        seen = 0
        async for line in run_services.logs(run_id, host=host):
            seen += 1
            if seen <= offset:
                continue
            lines.append(LogLineOut(timestamp=line.timestamp, level=line.level, message=line.message, stream=line.stream))
            if len(lines) >= limit:
                break
        return lines


# ---------------------------------------------------------------- access rules


Glob = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class RuleIn(BaseModel):
    """``subject`` may do ``actions`` only on scripts and hosts matching every condition given."""

    model_config = ConfigDict(extra="forbid")

    subject_kind: SubjectKind
    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    actions: list[Literal["read", "start", "stop", "author"]] = Field(min_length=1, max_length=len(RULE_ACTIONS))
    script_glob: Glob | None = None
    script_tag: Word | None = None
    host_glob: Glob | None = None
    host_label: Word | None = None
    description: str = Field(default="", max_length=10_000)

    @field_validator("actions")
    @classmethod
    def _unique(cls, actions: list[str]) -> list[str]:
        return sorted(set(actions))


class RuleOut(RuleIn):
    id: int
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, rule: AccessRule) -> RuleOut:
        return cls.model_validate(rule, from_attributes=True)


RuleId = Annotated[int, Path(ge=1, le=2**31)]


@router.get("/access-rules", tags=["access rules"], responses=ERRORS)
async def list_access_rules(c: CallDep) -> list[RuleOut]:
    async with c.action("rule.list", "access-rule"):
        c.authorize("admin")
        return [RuleOut.of(rule) for rule in await c.catalog.aio.run(rows.list_rules)]


@router.post("/access-rules", tags=["access rules"], status_code=201, responses=ERRORS)
async def add_access_rule(body: RuleIn, c: CallDep) -> RuleOut:
    async with c.action("rule.add", "access-rule") as detail:
        c.authorize("admin")
        detail.update(body.model_dump())
        rule = await c.catalog.aio.run(rows.add_rule, created_by=c.principal.username, **body.model_dump())
        detail["object_name"] = str(rule.id)
        return RuleOut.of(rule)


@router.get("/access-rules/{rule_id}", tags=["access rules"], responses=ERRORS)
async def show_access_rule(rule_id: RuleId, c: CallDep) -> RuleOut:
    async with c.action("rule.show", "access-rule", str(rule_id)):
        c.authorize("admin")
        return RuleOut.of(await c.catalog.aio.run(rows.get_rule, rule_id))


@router.put("/access-rules/{rule_id}", tags=["access rules"], responses=ERRORS)
async def replace_access_rule(rule_id: RuleId, body: RuleIn, c: CallDep) -> RuleOut:
    async with c.action("rule.replace", "access-rule", str(rule_id)) as detail:
        c.authorize("admin")
        detail.update(body.model_dump())
        return RuleOut.of(await c.catalog.aio.run(rows.replace_rule, rule_id, **body.model_dump()))


@router.delete("/access-rules/{rule_id}", tags=["access rules"], status_code=204, responses=ERRORS)
async def remove_access_rule(rule_id: RuleId, c: CallDep) -> None:
    async with c.action("rule.remove", "access-rule", str(rule_id)):
        c.authorize("admin")
        await c.catalog.aio.run(rows.remove_rule, rule_id)


# ---------------------------------------------------------------- audit


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    subject: str
    client: str
    action: str
    object_type: str
    object_name: str
    outcome: str
    detail: dict[str, Any]


@router.get("/audit-events", tags=["audit"], responses=ERRORS)
async def list_audit_events(
    c: CallDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Literal["ok", "denied", "error"] | None, Query()] = None,
    object_name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 100,
) -> list[AuditOut]:
    """Audit events, newest first (admins)."""
    async with c.action("audit.list", "audit"):
        c.authorize("admin")
        events = await c.catalog.aio.run(
            repository.list_audit, actor=actor, action=action, outcome=outcome, object_name=object_name, limit=limit
        )
        return [AuditOut.model_validate(event, from_attributes=True) for event in events]


# ---------------------------------------------------------------- webhooks


class ArgumentIn(BaseModel):
    """Payload field ``field`` (dotted path, e.g. ``ref`` or ``pusher.name``) becomes the next
    argument; its value must be a string, number or boolean matching ``pattern`` entirely."""

    model_config = ConfigDict(extra="forbid")

    field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,100}(\.[A-Za-z0-9_-]{1,100}){0,9}$")]
    pattern: str = Field(default=ARGUMENT_PATTERN, min_length=1, max_length=500)
    parameter: Annotated[str, StringConstraints(pattern=PARAMETER_NAME.pattern)] | None = None
    """For a script that declares parameters: the parameter this field's value goes to."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        return check_argument_pattern(pattern)


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=10_000)
    arguments: list[ArgumentIn] = Field(default=[], max_length=50)
    max_per_minute: int = Field(default=30, ge=1, le=6000)
    enabled: bool = True


class WebhookIn(WebhookSettings):
    script: Name


class WebhookOut(WebhookIn):
    id: str
    path: str
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls(id=hook.id, path=f"/hooks/{hook.id}", script=hook.script, description=hook.description,
                   arguments=hook.arguments, max_per_minute=hook.max_per_minute, enabled=hook.enabled,
                   created_by=hook.created_by, created_at=hook.created_at)


class WebhookCreated(WebhookOut):
    secret: str
    """The signing secret, shown only now (stored encrypted)."""


class DeliveryOut(BaseModel):
    delivery_id: str
    received_at: datetime
    client: str
    outcome: str
    detail: str
    run_id: str | None


class RefusalOut(BaseModel):
    """Deliveries refused before a valid signature was stored, counted per reason and hour."""

    reason: str
    hour: datetime
    count: int
    last_at: datetime
    last_client: str
    last_detail: str


HookId = Annotated[str, StringConstraints(pattern=r"^wh_[0-9a-f]{16}$")]


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


@router.get("/webhooks", tags=["webhooks"], responses=ERRORS)
async def list_webhooks(c: CallDep, script: Annotated[str | None, Query(max_length=100)] = None) -> list[WebhookOut]:
    async with c.action("webhook.list", "webhook"):
        c.authorize("admin")
        return [WebhookOut.of(hook) for hook in await c.catalog.aio.run(rows.list_webhooks, script=script)]


@router.post("/webhooks", tags=["webhooks"], status_code=201, responses=ERRORS)
async def add_webhook(body: WebhookIn, c: CallDep) -> WebhookCreated:
    """Create a webhook for a script (admins); the answer holds its secret, shown only once."""
    async with c.action("webhook.add", "webhook") as detail:
        c.authorize("admin")
        c.authorize("start", await c.targets.script_named(body.script))  # a webhook starts the script
        secret, hook_id = _new_secret(), f"wh_{secrets.token_hex(8)}"
        detail.update(object_name=hook_id, script=body.script)
        hook = await c.catalog.aio.run(rows.add_webhook, id=hook_id, created_by=c.principal.username,
                                       secret=seal(secret), **body.model_dump())
        return WebhookCreated(**WebhookOut.of(hook).model_dump(), secret=secret)


@router.get("/webhooks/{hook_id}", tags=["webhooks"], responses=ERRORS)
async def show_webhook(hook_id: HookId, c: CallDep) -> WebhookOut:
    async with c.action("webhook.show", "webhook", hook_id):
        c.authorize("admin")
        return WebhookOut.of(await c.catalog.aio.run(rows.get_webhook, hook_id))


@router.put("/webhooks/{hook_id}", tags=["webhooks"], responses=ERRORS)
async def update_webhook(hook_id: HookId, body: WebhookSettings, c: CallDep) -> WebhookOut:
    """Replace a webhook's settings (its script and secret stay)."""
    async with c.action("webhook.update", "webhook", hook_id) as detail:
        c.authorize("admin")
        detail.update(body.model_dump())
        return WebhookOut.of(await c.catalog.aio.run(rows.update_webhook, hook_id, **body.model_dump()))


@router.post("/webhooks/{hook_id}/secret", tags=["webhooks"], responses=ERRORS)
async def rotate_webhook_secret(hook_id: HookId, c: CallDep) -> WebhookCreated:
    """Give the webhook a new secret (the old one stops working at once); shown only now."""
    async with c.action("webhook.rotate", "webhook", hook_id):
        c.authorize("admin")
        secret = _new_secret()
        hook = await c.catalog.aio.run(rows.update_webhook, hook_id, secret=seal(secret))
        return WebhookCreated(**WebhookOut.of(hook).model_dump(), secret=secret)


@router.delete("/webhooks/{hook_id}", tags=["webhooks"], status_code=204, responses=ERRORS)
async def remove_webhook(hook_id: HookId, c: CallDep) -> None:
    async with c.action("webhook.remove", "webhook", hook_id):
        c.authorize("admin")
        await c.catalog.aio.run(rows.remove_webhook, hook_id)


@router.get("/webhooks/{hook_id}/deliveries", tags=["webhooks"], responses=ERRORS)
async def list_deliveries(hook_id: HookId, c: CallDep, limit: Limit = 100) -> list[DeliveryOut]:
    """The webhook's deliveries, newest first, with what came of each."""
    async with c.action("webhook.deliveries", "webhook", hook_id):
        c.authorize("admin")
        await c.catalog.aio.run(rows.get_webhook, hook_id)
        deliveries = await c.catalog.aio.run(rows.list_deliveries, hook_id, limit=limit)
        return [DeliveryOut.model_validate(d, from_attributes=True) for d in deliveries]


@router.get("/webhooks/{hook_id}/refusals", tags=["webhooks"], responses=ERRORS)
async def list_refusals(hook_id: HookId, c: CallDep, limit: Limit = 100) -> list[RefusalOut]:
    """How many deliveries the webhook refused, per reason and hour, newest hour first."""
    async with c.action("webhook.refusals", "webhook", hook_id):
        c.authorize("admin")
        await c.catalog.aio.run(rows.get_webhook, hook_id)
        refusals = await c.catalog.aio.run(rows.list_refusals, hook_id, limit=limit)
        return [RefusalOut.model_validate(r, from_attributes=True) for r in refusals]
