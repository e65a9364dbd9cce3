"""The faces of a fleet run, without peers: the host list a caller may hand the flow, the CLI's
policy options, progress lines and summary, and ``sms run show`` beside ``sms run NAME``."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sms_plugin.cli import fleet_run
from sms_plugin.cli.app import app, run_command_args
from sms_plugin.errors import InvalidInput
from sms_plugin.fleet_hosts import MAX_HOSTS, check_names
from sms_plugin.run_results import HostResult, RunResult

KNOWN = {"web-01", "web-02", "db-01"}


def test_exact_known_names_pass_in_the_order_given() -> None:
    assert check_names(["web-02", "web-01"], KNOWN) == ["web-02", "web-01"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("web-01", "must be a list of host names, not str"),
        ("role=web", "a selector is resolved by the SMS REST API"),
        ({"web-01": True}, "not dict"),
        ([], "names no host"),
        (["web-01", "web-01"], "more than once: 'web-01'"),
        (["web-01", 7], "strings), not 7"),
        (["web-01", None], "strings), not None"),
        (["web-01", "web-99"], "1 unknown host(s): 'web-99'"),
        (["web-*"], "unknown host(s): 'web-*'"),
        ([" web-01"], "unknown host(s): ' web-01'"),
        (["WEB-01"], "unknown host(s): 'WEB-01'"),
        (["web\u201001"], "unknown host(s)"),  # a Unicode hyphen
    ],
)
def test_anything_but_exact_known_names_is_refused(value: object, why: str) -> None:
    with pytest.raises(InvalidInput, match="'hosts'") as refused:
        check_names(value, KNOWN)
    assert why in str(refused.value)


def test_more_than_the_most_hosts_is_refused_before_names_are_looked_up() -> None:
    names = [f"h-{n}" for n in range(MAX_HOSTS + 1)]
    with pytest.raises(InvalidInput, match=f"names {MAX_HOSTS + 1} hosts; a fleet run takes at most {MAX_HOSTS}"):
        check_names(names, set(names))
    assert check_names(names[:MAX_HOSTS], set(names)) == names[:MAX_HOSTS]


def _variants(name: str) -> st.SearchStrategy[str]:
    """Strings that look like ``name`` to a person or a lenient parser but are not it."""
    look_alike = st.sampled_from(["\u2010", "\u2011", "\u2212", "\u0435", "\u0501", "\uff0d", "\u200b", "\u00a0"])
    blank = st.sampled_from([" ", "\t", "\n", "\r", "\u3000"])
    glob = st.sampled_from(["*", "?", "[", "]"])
    index = st.integers(min_value=0, max_value=len(name))
    return st.one_of(
        st.builds(lambda i, c: name[:i] + c + name[i:], index, st.one_of(look_alike, blank, glob)),
        st.builds(lambda i, c: name[:i] + c + name[i + 1:], st.integers(0, len(name) - 1), st.one_of(look_alike, glob)),
        st.just(name.upper()),
        st.builds(lambda s: s + name, st.text(string.whitespace, min_size=1, max_size=3)),
    ).filter(lambda variant: variant != name)


@settings(max_examples=300, deadline=None)
@given(_variants("web-01"))
def test_no_variant_of_a_known_name_passes(variant: str) -> None:
    with pytest.raises(InvalidInput, match="unknown host"):
        check_names(["web-02", variant], KNOWN)


def test_policy_holds_only_the_options_given() -> None:
    assert fleet_run.policy_of(parallel=None, batch=None, batch_pause=None, max_failures=None, fail_fast=False) is None
    assert fleet_run.policy_of(parallel=10, batch="25%", batch_pause=2.5, max_failures="1", fail_fast=True) == {
        "parallel": 10, "batch": "25%", "batch_pause_seconds": 2.5, "max_failures": "1", "fail_fast": True,
    }


def _result(state: str, *hosts: HostResult, message: str = "") -> RunResult:
    return RunResult("r-1", state, message, None, [], hosts)


def test_progress_lines_and_summary_name_every_host_and_count_failures() -> None:
    good = HostResult("web-01", "succeeded", 0, 1.25)
    bad = HostResult("web-02", "failed", 3, 0.5, "line one\ndisk full\n")
    down = HostResult("db-01", "unreachable", None, None, "cannot reach db-01:22")
    assert fleet_run.host_line(good) == "web-01  succeeded  exit 0  1.2 s"
    assert fleet_run.host_line(bad) == "web-02  failed  exit 3  0.5 s  disk full"
    assert fleet_run.host_line(down) == "db-01  unreachable  cannot reach db-01:22"
    failed = _result("FAILED", good, bad, down, message="hello failed on 2 of 3 hosts")
    assert fleet_run.summary(failed) == (
        "FAILED: 1 of 3 host(s) succeeded (1 failed, 1 unreachable); hello failed on 2 of 3 hosts"
    )
    assert not failed.ok
    assert _result("COMPLETED", good).ok
    assert not _result("COMPLETED", good, HostResult("web-02", "skipped")).ok


def test_follow_prints_each_host_once_when_it_ends_when_piped() -> None:
    from io import StringIO

    from rich.console import Console

    steps = iter([
        _result("RUNNING", HostResult("a", "running"), HostResult("b", "pending")),
        _result("RUNNING", HostResult("a", "succeeded", 0, 1.0), HostResult("b", "running")),
        _result("FAILED", HostResult("a", "succeeded", 0, 1.0), HostResult("b", "failed", 1, 2.0, "boom")),
    ])
    piped = StringIO()
    final = fleet_run.follow(lambda: next(steps), Console(file=piped, width=200), timeout=10, poll=0)
    assert final.state == "FAILED"
    assert piped.getvalue().splitlines() == ["a  succeeded  exit 0  1.0 s", "b  failed  exit 1  2.0 s  boom"]


def test_sms_run_show_needs_a_run_id_else_it_starts_a_script_named_show() -> None:
    run_id = "0b7a5a40-8f3c-4b43-9a57-3c1e9d0e8e11"
    assert run_command_args(["show", run_id]) == ["show", run_id]
    assert run_command_args(["show"]) == ["start", "show"]
    assert run_command_args(["show", "--", "x"]) == ["start", "show", "--", "x"]
    assert run_command_args(["hello", "--hosts", "web-*"]) == ["start", "hello", "--hosts", "web-*"]


def test_policy_options_without_hosts_are_refused() -> None:
    result = CliRunner().invoke(app, ["run", "hello", "--parallel", "3"])
    assert isinstance(result.exception, InvalidInput)
    assert "need --hosts SELECTOR" in str(result.exception)
