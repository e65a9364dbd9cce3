"""Declared script parameters: the script's contract, checked the same way at every entry point.

A script declares the parameters it takes (:class:`ParameterSpec`) and the environment names a
run may set (``allowed_env``). :func:`resolve` is the one check every entry point uses (flow,
REST, webhook, SDK, CLI, schedule); :func:`deployment_schema` turns the same declaration into the
Prefect deployment's parameter schema, so Prefect's UI form and server enforce it too.

Declared parameters reach the script as one argument each, in declaration order:
``--name=value`` (a boolean: ``--name`` when true, nothing when false; an absent optional
parameter: nothing). Secret parameters never travel as arguments (``ps`` shows those): the
script reads them from the environment variable ``SMS_SECRET_<NAME>``.

>>> spec = ParameterSpec(name="days", type="integer", default=7)
>>> resolve_arguments([spec], {"days": "30"})
(['--days=30'], {}, {'days': 30})
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sms_plugin.environment import SECRET_PREFIX, check_env, check_env_names, check_words
from sms_plugin.errors import InvalidInput
from sms_plugin.fleet.policy import MAX_DEADLINE_SECONDS

ParameterType = Literal["string", "integer", "number", "boolean"]
Value = str | int | float | bool

PARAMETER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
RESERVED = frozenset({"script", "version", "args", "env", "host", "parameters"})
"""The run-script flow's own parameter names."""

NO_NUL = r"^[^\x00]*$"
"""A JSON-schema pattern: text without NUL (written as an escape: PostgreSQL's JSON refuses a raw NUL)."""

MASK = "********"
"""What a secret's value is replaced by wherever it is shown (Prefect's stored parameters, audit)."""

_INTEGER = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?([eE][-+]?[0-9]{1,3})?")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def coerce(kind: ParameterType, value: object) -> Value:
    """``value`` as ``kind``; text is parsed (ASCII digits only), anything else must already fit."""
    if kind == "string":
        if isinstance(value, str):
            check_words([value], "value")
            return value
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLEANS:
            return _BOOLEANS[value.lower()]
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
            return value
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            return int(value)
    else:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value
        if isinstance(value, str) and _NUMBER.fullmatch(value):
            return float(value)
    raise InvalidInput(f"must be {'an' if kind == 'integer' else 'a'} {kind}, not {value!r}"[:300])


class ParameterSpec(BaseModel):
    """One declared parameter."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ParameterType = "string"
    required: bool = False
    default: Value | None = None
    choices: list[Value] | None = Field(default=None, min_length=1, max_length=1000)
    pattern: str | None = Field(default=None, max_length=500)
    """A regular expression the whole (string) value must match."""
    secret: bool = False
    description: str = Field(default="", max_length=2000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PARAMETER_NAME.fullmatch(value):
            raise ValueError(f"parameter name {value!r} is invalid: use a-z, 0-9 and '_', starting with a letter (at most 64)")
        if value in RESERVED:
            raise ValueError(f"parameter name {value!r} is reserved ({', '.join(sorted(RESERVED))})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.pattern is not None:
            if self.type != "string":
                raise ValueError(f"parameter {self.name}: 'pattern' applies to strings only")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"parameter {self.name}: pattern does not compile: {error}") from None
        try:
            if self.choices is not None:
                self.choices = [coerce(self.type, choice) for choice in self.choices]
            if self.default is not None:
                self.default = self.check(self.default)
        except InvalidInput as error:
            raise ValueError(f"parameter {self.name}: default or choice {error}") from None
        if self.secret and (self.type != "string" or self.choices or self.default is not None):
            raise ValueError(f"parameter {self.name}: a secret is a string without choices or default")
        return self

    def check(self, value: object) -> Value:
        """``value`` coerced to this parameter's type; InvalidInput (naming the parameter) if it does not fit."""
        if self.secret and not isinstance(value, str):  # a refusal may reach a state message: never the value
            raise InvalidInput(f"parameter {self.name!r} must be a string, not {type(value).__name__} (a secret: value not shown)")
        try:
            coerced = coerce(self.type, value)
        except InvalidInput as error:
            raise InvalidInput(f"parameter {self.name!r} {error}") from None
        if self.choices is not None and coerced not in self.choices:
            raise InvalidInput(f"parameter {self.name!r} must be one of {self.choices}")
        if self.pattern is not None and not re.fullmatch(self.pattern, str(coerced)):
            raise InvalidInput(f"parameter {self.name!r} does not match its pattern {self.pattern!r}")
        return coerced

    def schema(self) -> dict[str, Any]:
        """This parameter as a JSON-schema property (what Prefect's UI form and server use)."""
        prop: dict[str, Any] = {"type": self.type, "title": self.name}
        if self.description:
            prop["description"] = self.description
        if self.default is not None and not self.secret:
            prop["default"] = self.default
        if self.choices is not None:
            prop["enum"] = list(self.choices)
        if self.type == "string":  # a secret's own pattern is checked by the flow: Prefect sees a reference
            prop["pattern"] = f"^(?:{self.pattern})$" if self.pattern and not self.secret else NO_NUL
        if self.secret:
            prop.update(format="password", writeOnly=True)
        return prop

    def argument(self, value: Value) -> list[str]:
        if self.type == "boolean":
            return [f"--{self.name}"] if value else []
        return [f"--{self.name}={value}"]


class Declaration(Protocol):
    """What :func:`resolve` needs of a script (a catalog row or a ScriptSpec)."""

    name: str
    parameters: Sequence[Mapping[str, Any]] | Sequence[ParameterSpec]
    allowed_env: Sequence[str]
    default_args: Sequence[str]


def declared(script: Declaration) -> list[ParameterSpec]:
    return [p if isinstance(p, ParameterSpec) else ParameterSpec.model_validate(p) for p in script.parameters]


def resolve_arguments(
    specs: list[ParameterSpec], values: Mapping[str, object]
) -> tuple[list[str], dict[str, str], dict[str, Value]]:
    """The arguments, secret environment and typed values for declared ``values``; InvalidInput on any problem."""
    known = {spec.name: spec for spec in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; declared: {sorted(known) or 'none'}")
    args: list[str] = []
    secrets: dict[str, str] = {}
    typed: dict[str, Value] = {}
    for spec in specs:
        value = values.get(spec.name)
        if value is None:
            if spec.required and spec.default is None:
                raise InvalidInput(f"parameter {spec.name!r} is required")
            value = spec.default
            if value is None:
                continue
        checked = typed[spec.name] = spec.check(value)
        if spec.secret and checked == MASK:
            raise InvalidInput(f"secret parameter {spec.name!r} was masked after its first use: start a new run with its value")
        if spec.secret:
            secrets[SECRET_PREFIX + spec.name.upper()] = str(checked)
        else:
            args.extend(spec.argument(checked))
    return args, secrets, typed


@dataclass(frozen=True)
class RunInputs:
    """What a run passes to its script, validated."""

    args: list[str]
    env: dict[str, str]
    """The run's own variables (added to the script's): allowed names, then secret parameters."""
    parameters: dict[str, Value]
    """The declared parameters, typed, defaults filled in; secrets included: never log this."""


def resolve(
    script: Declaration,
    *,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, object] | None = None,
) -> RunInputs:
    """The one check of a run's inputs against the script's declaration; InvalidInput says what is wrong.

    A script that declares parameters takes no free ``args``; one that declares none takes free
    ``args`` (its default arguments when None) and no ``parameters``. ``env`` may only name
    variables the script allows, and never a start-up variable (:mod:`sms_plugin.environment`).
    """
    specs = declared(script)
    env = dict(env or {})
    check_env(env)
    not_allowed = sorted(set(env) - set(script.allowed_env))
    if not_allowed:
        allowed = sorted(script.allowed_env) or "none"
        raise InvalidInput(f"script {script.name} does not let a run set {not_allowed}; allowed: {allowed}")
    if specs:
        if args:
            raise InvalidInput(
                f"script {script.name} declares parameters {[s.name for s in specs]}: give them by name, not as arguments"
            )
        words, secrets, typed = resolve_arguments(specs, parameters or {})
        return RunInputs(args=words, env={**env, **secrets}, parameters=typed)
    if parameters:
        raise InvalidInput(f"script {script.name} declares no parameters; unknown parameter(s) {sorted(parameters)}")
    words = list(script.default_args if args is None else args)
    check_words(words)
    return RunInputs(args=words, env=env, parameters={})


def check_declaration(parameters: Sequence[ParameterSpec], allowed_env: Sequence[str]) -> None:
    """InvalidInput for duplicate parameter names or environment names no run may set."""
    names = [p.name for p in parameters]
    if len(names) != len(set(names)):
        raise InvalidInput(f"parameter names must be unique: {names}")
    check_env_names(allowed_env)


HOST_NAME = r"^[a-z0-9_-]{1,100}$"
MAX_FLEET_HOSTS = 5000
"""The most hosts one fleet run has."""
_SHARE = {"type": "string", "pattern": r"^[0-9]{1,9}%?$"}
FLEET_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "policy", "additionalProperties": False,
    "description": "How a fleet run goes through its hosts (docs/fleet.md).",
    "properties": {
        "parallel": {"type": "integer", "minimum": 1, "maximum": MAX_FLEET_HOSTS, "title": "parallel",
                     "description": "Hosts at a time (50 when empty)."},
        "batch": {**_SHARE, "title": "batch", "description": 'Rolling batches: "10" hosts or "10%" of them.'},
        "batch_pause_seconds": {"type": "number", "minimum": 0, "title": "batch_pause_seconds",
                                "description": "Seconds between two batches."},
        "max_failures": {**_SHARE, "title": "max_failures",
                         "description": 'No new host starts once more than this ("3" or "5%") failed.'},
        "fail_fast": {"type": "boolean", "title": "fail_fast", "description": "Stop starting hosts at the first failure."},
        "deadline_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_SECONDS, "title": "deadline_seconds",
                             "description": "After this many seconds the running hosts are stopped and the rest skipped."},
    },
}
"""The ``policy`` parameter (sms_plugin.fleet.policy.FleetPolicy checks it again in the flow)."""


def deployment_schema(script: Declaration) -> dict[str, Any]:
    """The parameter schema of the script's Prefect deployment: exactly what a run may pass."""
    specs = declared(script)
    text = {"type": "string", "pattern": NO_NUL}
    properties: dict[str, Any] = {
        "script": {"type": "string", "title": "script", "enum": [script.name], "default": script.name},
        "version": {"type": "integer", "title": "version", "minimum": 1,
                    "description": "Run this version; the newest when empty."},
        "host": {"type": "string", "title": "host", "pattern": HOST_NAME,
                 "description": "Run on this host instead of the script's own."},
        "hosts": {"type": "array", "title": "hosts", "items": {"type": "string", "pattern": HOST_NAME},
                  "minItems": 1, "maxItems": MAX_FLEET_HOSTS, "uniqueItems": True,
                  "description": "A fleet run: these hosts instead of the script's own (not with host)."},
        "policy": FLEET_POLICY_SCHEMA,
    }
    required = ["script"]
    if specs:
        properties["parameters"] = {
            "type": "object", "title": "parameters", "properties": {s.name: s.schema() for s in specs},
            "required": [s.name for s in specs if s.required and s.default is None],
            "additionalProperties": False, "description": "The script's declared parameters.",
        }
        if properties["parameters"]["required"]:
            required.append("parameters")
    else:
        properties["args"] = {"type": "array", "title": "args", "items": text,
                              "description": "Arguments; the script's default arguments when empty."}
    if script.allowed_env:
        properties["env"] = {
            "type": "object", "title": "env", "properties": {name: {**text, "title": name} for name in script.allowed_env},
            "additionalProperties": False, "description": "Environment variables this script lets a run set.",
        }
    return {"title": "Parameters", "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}


def masked(parameters: Mapping[str, object], script: Declaration) -> dict[str, object]:
    """``parameters`` with every secret value replaced by :data:`MASK`."""
    secret = {s.name for s in declared(script) if s.secret}
    return {k: MASK if k in secret and v is not None else v for k, v in parameters.items()}
