"""Declared parameters and the environment rules: the one check every entry point uses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_plugin.catalog import ScriptSpec
from sms_plugin.environment import FORBIDDEN_NAMES, FORBIDDEN_PREFIXES, env_name_problem
from sms_plugin.errors import InvalidInput
from sms_plugin.parameters import deployment_schema, resolve
from sms_plugin.transports.base import Plan

SPEC = ScriptSpec(
    name="report", interpreter="bash", host="h", allowed_env=["REPORT_DIR"],
    parameters=[
        {"name": "days", "type": "integer", "default": 7},
        {"name": "mode", "choices": ["full", "quick"], "required": True},
        {"name": "label", "pattern": "[a-z]{1,8}"},
        {"name": "dry_run", "type": "boolean"},
        {"name": "token", "secret": True},
    ],
)


def test_declared_parameters_become_arguments_in_declaration_order_and_secrets_become_environment() -> None:
    inputs = resolve(SPEC, parameters={"mode": "full", "dry_run": "true", "token": "s3cr'et", "label": "abc"},
                     env={"REPORT_DIR": "/r"})
    assert inputs.args == ["--days=7", "--mode=full", "--label=abc", "--dry_run"]
    assert inputs.env == {"REPORT_DIR": "/r", "SMS_SECRET_TOKEN": "s3cr'et"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"parameters": {}}, "parameter 'mode' is required"),
        ({"parameters": {"mode": "slow"}}, "parameter 'mode' must be one of"),
        ({"parameters": {"mode": "full", "days": "7.5"}}, "parameter 'days' must be an integer"),
        ({"parameters": {"mode": "full", "days": "٣"}}, "parameter 'days' must be an integer"),  # not ASCII
        ({"parameters": {"mode": "full", "label": "ABC"}}, "parameter 'label' does not match"),
        ({"parameters": {"mode": "full", "other": "x"}}, r"unknown parameter\(s\) \['other'\]"),
        ({"parameters": {"mode": "full"}, "args": ["--days=1"]}, "give them by name"),
        ({"parameters": {"mode": "full"}, "env": {"OTHER": "x"}}, "does not let a run set"),
        ({"parameters": {"mode": "full"}, "env": {"BASH_ENV": "/x"}}, "read at start-up by bash"),
        ({"parameters": {"mode": "full", "token": "a\0b"}}, "NUL"),
    ],
)
def test_invalid_inputs_are_refused_naming_the_problem(given: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve(SPEC, **given)


@given(st.one_of(st.integers(min_value=10**6), st.floats(allow_nan=False), st.lists(st.text(min_size=8), min_size=1),
                 st.dictionaries(st.text(min_size=8), st.text(min_size=8), min_size=1)))
def test_a_secret_parameter_refused_never_shows_its_value(value: object) -> None:
    with pytest.raises(InvalidInput, match="parameter 'token' must be a string") as refused:
        resolve(SPEC, parameters={"mode": "full", "token": value})
    assert repr(value) not in str(refused.value) and str(value) not in str(refused.value)


def test_a_script_without_declarations_takes_free_arguments_but_no_nul_and_no_environment() -> None:
    plain = ScriptSpec(name="plain", interpreter="sh", host="h", default_args=["d"])
    assert resolve(plain).args == ["d"]
    assert resolve(plain, args=["a b", "$(x)"]).args == ["a b", "$(x)"]
    for bad in ({"args": ["a\0"]}, {"env": {"A": "1"}}, {"parameters": {"x": "1"}}):
        with pytest.raises(InvalidInput):
            resolve(plain, **bad)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"allowed_env": ["LD_PRELOAD"]}, "dynamic loader"),
        ({"allowed_env": ["sms_run_id"]}, "SMS itself"),
        ({"env": {"PythonPath": "/x"}}, "python"),
        ({"parameters": [{"name": "args"}]}, "reserved"),
        ({"parameters": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"parameters": [{"name": "p", "secret": True, "default": "x"}]}, "secret"),
        ({"parameters": [{"name": "p", "type": "integer", "default": "x"}]}, "must be an integer"),
        ({"parameters": [{"name": "p", "required": True}], "schedules": [{"interval_seconds": 60}]}, "scheduled"),
        ({"parameters": [{"name": "p"}], "default_args": ["x"]}, "no default_args"),
    ],
)
def test_declarations_are_checked_when_a_script_is_added(fields: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ScriptSpec.parse({"name": "s", "interpreter": "sh", "host": "h", **fields})


def test_the_deployment_schema_is_exactly_what_a_run_may_pass() -> None:
    schema = deployment_schema(SPEC)
    assert set(schema["properties"]) == {"script", "version", "host", "hosts", "policy", "parameters", "env"}
    declared = schema["properties"]["parameters"]
    assert list(declared["properties"]) == ["days", "mode", "label", "dry_run", "token"]
    assert declared["required"] == ["mode"] and declared["additionalProperties"] is False
    assert declared["properties"]["token"]["format"] == "password"
    assert schema["properties"]["script"]["enum"] == ["report"]
    assert "args" in deployment_schema(ScriptSpec(name="p", interpreter="sh", host="h"))["properties"]


def _allowed(name: str) -> bool:
    upper = name.upper()
    return (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None
        and upper not in FORBIDDEN_NAMES
        and not upper.startswith(tuple(FORBIDDEN_PREFIXES))
    )


NAMES = st.one_of(
    st.text(max_size=20),
    st.sampled_from([*FORBIDDEN_NAMES, "--split-string", "-S", "A=B", "A B", "ÄNDERN", "bash_env", "sms_run_id"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.builds(lambda p, rest: p + rest, st.sampled_from([*FORBIDDEN_PREFIXES, "ld_", "Python"]), st.text(max_size=8)),
)


@given(name=NAMES, value=st.text(max_size=20))
def test_every_name_and_value_is_either_allowed_everywhere_or_refused_everywhere(name: str, value: str) -> None:
    assert (env_name_problem(name) is None) == _allowed(name)
    sms_sets = re.fullmatch(r"SMS_SECRET_[A-Za-z0-9_]*", name) is not None  # SMS's own, for secret parameters
    ok = (_allowed(name) or sms_sets) and _receivable(value)
    try:
        Plan(program=("sh", "x"), env={name: value})
    except InvalidInput:
        assert not ok
    else:
        assert ok


@given(args=st.lists(st.text(max_size=10), max_size=4))
def test_arguments_with_nul_are_refused_by_every_transport(args: list[str]) -> None:
    try:
        Plan(program=("sh", "x", *args))
    except InvalidInput:
        assert not all(map(_receivable, args))
    else:
        assert all(map(_receivable, args))


def _receivable(text: str) -> bool:
    return "\0" not in text and text.encode("utf-8", "replace") == text.encode("utf-8", "surrogatepass")
