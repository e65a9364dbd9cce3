"""What a user gives for a script (CLI, YAML file or SDK), validated before it reaches the catalog."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal, TYPE_CHECKING, Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sms_plugin.environment import check_env, check_words
from sms_plugin.errors import InvalidInput
from sms_plugin.parameters import ParameterSpec, check_declaration
from sms_plugin.selectors import SelectorError, parse

if TYPE_CHECKING:
    from sms_plugin.catalog.models import Script

T = TypeVar("T")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
#: Seconds fit a 32-bit INTEGER column (MariaDB) and a Python timedelta: about 68 years.
MAX_SECONDS = 2**31 - 1

_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
_CRON_WORDS = {"L", "W", "LW"} | set(
    "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC SUN MON TUE WED THU FRI SAT".split()
)


def check_cron(expr: str) -> str:
    """Return ``expr`` if it is a 5-field cron expression with known words and numbers in range."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields: minute hour day-of-month month day-of-week")
    for text, (label, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        tokens = re.findall(r"\d+|[A-Za-z]+|.", text)
        for previous, token in zip(["", *tokens], tokens, strict=False):
            if token.isdigit():
                ok = previous == "/" or low <= int(token) <= high
            else:
                ok = token in "*?,-/#" or token.upper() in _CRON_WORDS
            if not ok:
                raise ValueError(f"cron {expr!r}: the {label} field {text!r} is invalid")
    return expr


class ScheduleSpec(BaseModel):
    """When to run a script: exactly one of ``cron`` or ``interval_seconds``, in ``timezone``."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    interval_seconds: int | None = Field(default=None, gt=0, le=MAX_SECONDS)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris'") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'interval_seconds'")
        return self


class ScriptSpec(BaseModel):
    """A script's metadata as a user declares it; unknown fields are refused so typos show."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    interpreter: str = Field(min_length=1, max_length=32)
    host: str | None = Field(default=None, min_length=1, max_length=100)
    targets: str | None = Field(default=None, min_length=1, max_length=2000)
    """A host selector instead of ``host``: each run goes to the hosts it picks then (docs/fleet.md)."""
    path: str | None = Field(default=None, max_length=1024)
    default_args: list[str] = []
    env: dict[str, str] = {}
    parameters: list[ParameterSpec] = Field(default=[], max_length=100)
    allowed_env: list[str] = Field(default=[], max_length=100)
    working_dir: str | None = Field(default=None, max_length=1024)
    timeout_seconds: int | None = Field(default=None, gt=0, le=MAX_SECONDS)
    retries: int = Field(default=0, ge=0, le=100)
    retry_delay_seconds: int = Field(default=30, ge=0, le=MAX_SECONDS)
    kill_grace_seconds: int = Field(default=5, ge=0, le=3600)
    single_instance: Literal["off", "queue", "reject"] = "off"
    schedules: list[ScheduleSpec] = []
    tags: list[str] = []
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"script name {value!r} is invalid: use 1-100 lowercase letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked(check_env, value)

    @field_validator("default_args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        return _checked(check_words, value)

    @model_validator(mode="after")
    def _declaration(self) -> Self:
        try:
            check_declaration(self.parameters, self.allowed_env)
        except InvalidInput as error:
            raise ValueError(str(error)) from None
        if self.parameters and self.default_args:
            raise ValueError("a script that declares parameters takes no default_args (give parameters defaults)")
        needed = [p.name for p in self.parameters if p.required and p.default is None]
        if needed and self.schedules:
            raise ValueError(f"a scheduled run cannot give required parameters {needed}: give them defaults")
        return self

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except SelectorError as error:
                raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _host_or_targets(self) -> Self:
        if (self.host is None) == (self.targets is None):
            raise ValueError("a script needs exactly one of 'host' (one host) or 'targets' (a host selector)")
        return self

    @model_validator(mode="after")
    def _original_path(self) -> Self:
        if self.interpreter == "original" and not (
            self.path and (PurePosixPath(self.path).is_absolute() or PureWindowsPath(self.path).is_absolute())
        ):
            raise ValueError("interpreter 'original' needs 'path': the absolute path of the script on the host")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ScriptSpec:
        """Validate ``data``; raise InvalidInput with one line per problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(_describe(exc)) from None

    @classmethod
    def from_script(cls, script: Script) -> ScriptSpec:
        """The spec a catalog row was made from (to show or diff against a new spec)."""
        return cls.model_validate({field: getattr(script, field) for field in cls.model_fields})

    def columns(self) -> dict[str, Any]:
        """The values to store in a ``scripts`` row; schedules without their empty fields."""
        values = self.model_dump(exclude={"schedules", "parameters"})
        values["schedules"] = [schedule.model_dump(exclude_none=True) for schedule in self.schedules]
        values["parameters"] = [parameter.model_dump(exclude_defaults=True) for parameter in self.parameters]
        return values


def _checked(check: Callable[[Any], None], value: T) -> T:
    """``value`` if ``check`` accepts it; its InvalidInput as the ValueError pydantic reports."""
    try:
        check(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None
    return value


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "script"
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        lines.append(f"{where}: {message}")
    return "\n".join(lines)
