"""Host selectors: the grammar, its errors with their column, and the boolean laws over random fleets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_plugin.selectors import (
    And,
    Group,
    HostRecord,
    Label,
    Not,
    Or,
    Pattern,
    Selector,
    SelectorError,
    cycle_through,
    parse,
    render,
    select,
)

FLEET = [
    HostRecord("web-01", "ssh", frozenset({"role=web", "site=eu", "prod-eu"})),
    HostRecord("web-02", "ssh", frozenset({"role=web", "site=us"})),
    HostRecord("db-01", "ssh", frozenset({"role=db", "site=eu", "legacy"})),
    HostRecord("win-01", "windows", frozenset({"site=eu-west"})),
    HostRecord("local", "local"),
]


def picked(text: str, groups: dict[str, str] | None = None) -> list[str]:
    return [host.name for host in select(text, FLEET, groups or {})]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("web-01", ["web-01"]),
        ("web-*", ["web-01", "web-02"]),
        ("web-01,db-01", ["web-01", "db-01"]),
        ("role=web", ["web-01", "web-02"]),
        ("role=web AND site=eu", ["web-01"]),
        ("site=eu*", ["web-01", "db-01", "win-01"]),
        ("NOT legacy", ["web-01", "web-02", "win-01", "local"]),
        ("prod-eu", ["web-01"]),
        ("role=db OR role=web AND site=us", ["web-02", "db-01"]),
        ("(role=db OR role=web) AND site=us", ["web-02"]),
        ("NOT NOT legacy", ["db-01"]),
        ("NOT (site=eu OR site=us)", ["win-01", "local"]),
        ("nothing-like-this", []),
        ("role", []),  # a bare word never matches the key of a key=value label
    ],
)
def test_selectors_pick_hosts(text: str, names: list[str]) -> None:
    assert picked(text) == names


def test_groups_expand_and_nest() -> None:
    groups = {"eu": "site=eu*", "eu-web": "@eu AND role=web"}
    assert picked("@eu-web", groups) == ["web-01"]
    assert picked("@eu AND NOT @eu-web", groups) == ["db-01", "win-01"]


@pytest.mark.parametrize(
    ("text", "column", "problem"),
    [
        ("role=web AND", 13, "expected a host name, glob, label, @group, NOT or '(', found the end"),
        ("(web-01", 8, "expected ')', found the end"),
        ("web-01 db-01", 8, "expected AND, OR or the end, found 'db-01'"),
        ("web-01 AND $x", 12, "unexpected character '$'"),
        ("a==b", 1, "a label is KEY=VALUE"),
        ("@Bad", 1, "a group is @NAME"),
        ("   ", 1, "the selector is empty"),
        ("web, OR x", 6, "expected a host name"),
    ],
)
def test_parse_errors_name_the_column(text: str, column: int, problem: str) -> None:
    with pytest.raises(SelectorError) as raised:
        parse(text)
    assert raised.value.position == column
    assert problem in raised.value.problem
    assert str(raised.value).splitlines()[-1] == "  " + " " * (column - 1) + "^"


def test_unknown_group_and_cycles_are_refused_with_their_place() -> None:
    with pytest.raises(SelectorError) as raised:
        select("web-* AND @nope", FLEET, {})
    assert (raised.value.position, raised.value.problem) == (11, "there is no host group 'nope'")
    with pytest.raises(SelectorError, match="host group cycle a -> b -> a"):
        select("@a", FLEET, {"a": "@b", "b": "x OR @a"})
    stored = {"b": parse("@c"), "c": parse("web-01")}
    assert cycle_through("a", parse("@b"), stored) is None
    assert cycle_through("c", parse("@b"), stored) == ["c", "b", "c"]
    assert cycle_through("a", parse("@a"), {}) == ["a", "a"]


# ---------------------------------------------------------------- properties

NAMES = ["web-01", "web-02", "db-01", "db-02", "app", "x.y"]
LABELS = ["prod-eu", "legacy", "role=web", "role=db", "site=eu", "site=us"]

words = st.sampled_from(["web-*", "db-0?", "app", "x.y", "legacy", "prod-eu", "[wd]*", "*"]).map(Pattern)
labels = st.sampled_from(["role", "site"]).flatmap(
    lambda key: st.sampled_from(["web", "db", "eu", "us", "e*"]).map(lambda value: Label(key, value))
)
groups = st.sampled_from(["g1", "g-2"]).map(Group)
selectors: st.SearchStrategy[Selector] = st.recursive(
    st.one_of(words, labels, groups),
    lambda inner: st.one_of(
        inner.map(Not), st.builds(And, inner, inner), st.builds(Or, inner, inner)
    ),
    max_leaves=12,
)
fleets = st.lists(
    st.builds(HostRecord, st.sampled_from(NAMES), st.just("ssh"), st.frozensets(st.sampled_from(LABELS))),
    unique_by=lambda host: host.name,
)
GROUPS = {"g1": "role=web OR legacy", "g-2": "NOT site=eu"}


@settings(max_examples=300, deadline=None)
@given(selectors)
def test_render_round_trips(node: Selector) -> None:
    assert parse(render(node)) == node
    assert render(parse(render(node))) == render(node)


def names_of(node: Selector, fleet: list[HostRecord]) -> set[str]:
    return {host.name for host in select(render(node), fleet, GROUPS)}


@settings(max_examples=200, deadline=None)
@given(selectors, selectors, fleets)
def test_boolean_laws_hold_over_random_fleets(a: Selector, b: Selector, fleet: list[HostRecord]) -> None:
    everyone = {host.name for host in fleet}
    sa, sb = names_of(a, fleet), names_of(b, fleet)
    assert names_of(And(a, b), fleet) == sa & sb
    assert names_of(Or(a, b), fleet) == sa | sb
    assert names_of(Not(a), fleet) == everyone - sa
    assert names_of(Not(Not(a)), fleet) == sa
    assert names_of(Not(And(a, b)), fleet) == names_of(Or(Not(a), Not(b)), fleet)  # De Morgan
    assert names_of(Not(Or(a, b)), fleet) == names_of(And(Not(a), Not(b)), fleet)
    assert names_of(And(a, Or(a, b)), fleet) == sa  # absorption


@settings(max_examples=100, deadline=None)
@given(fleets)
def test_a_comma_is_an_or_of_names(fleet: list[HostRecord]) -> None:
    listed = [host.name for host in fleet[:3]]
    if listed:
        assert [host.name for host in select(",".join(listed), fleet, {})] == [host.name for host in fleet[:3]]


def test_huge_or_deep_selectors_are_refused_not_crashed() -> None:
    with pytest.raises(SelectorError, match="at most 200 terms") as many:
        parse(",".join(["a"] * 201))
    assert many.value.position == 401
    with pytest.raises(SelectorError, match="more than 50 parentheses and NOTs") as deep:
        parse("(" * 60 + "a" + ")" * 60)
    assert deep.value.position == 51
    with pytest.raises(SelectorError, match="more than 50"):
        parse("NOT " * 51 + "a")
    assert picked(" AND ".join(["NOT db-01"] + ["web-0?"] * 150)) == ["web-01", "web-02"]
    chain = {f"g{n}": " OR ".join([f"@g{n + 1}"] + ["x"] * 199) for n in range(30)} | {"g30": "web-01"}
    with pytest.raises(SelectorError, match="nest too deeply"):
        select("@g0", FLEET, chain)
