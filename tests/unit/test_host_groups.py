"""Host groups in the catalog (SQLite): add, replace, list, remove; cycles and unknown groups refused,
a group in use kept, every change audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from sms_plugin import host_groups
from sms_plugin.catalog import Catalog, list_audit
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.selectors import SelectorError
from tests.unit.test_catalog import catalog  # noqa: F401 - fixture: a migrated SQLite catalog


T = TypeVar("T")


def tx(catalog: Catalog, work: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``work(session, ...)`` in a transaction of its own, as the CLI calls it."""
    with catalog.session() as session:
        return work(session, *args, **kwargs)


def test_add_show_list_replace_remove(catalog: Catalog) -> None:
    tx(catalog, host_groups.add, "eu", "site=eu*", "Europe", author="adam")
    tx(catalog, host_groups.add, "eu-web", "@eu AND role=web", author="adam")
    assert [g.name for g in tx(catalog, host_groups.listing)] == ["eu", "eu-web"]
    shown = tx(catalog, host_groups.show, "eu")
    assert (shown.selector, shown.description, shown.created_by) == ("site=eu*", "Europe", "adam")
    tx(catalog, host_groups.replace, "eu", "site=eu", "EU only", author="adam")
    assert tx(catalog, host_groups.stored_selectors) == {"eu": "site=eu", "eu-web": "@eu AND role=web"}
    tx(catalog, host_groups.remove, "eu-web", author="adam")
    tx(catalog, host_groups.remove, "eu", author="adam")
    assert tx(catalog, host_groups.listing) == []
    with catalog.session() as s:
        actions = [event.action for event in list_audit(s, actor="adam")]
    assert actions == ["host-group.remove", "host-group.remove", "host-group.replace", "host-group.add", "host-group.add"]


def test_cycles_are_refused_directly_and_through_other_groups(catalog: Catalog) -> None:
    with pytest.raises(SelectorError, match="host group 'a' would refer to itself: a -> a"):
        tx(catalog, host_groups.add, "a", "web-* OR @a", author="adam")
    tx(catalog, host_groups.add, "a", "web-*", author="adam")
    tx(catalog, host_groups.add, "b", "@a AND NOT legacy", author="adam")
    tx(catalog, host_groups.add, "c", "@b", author="adam")
    with pytest.raises(SelectorError, match="would refer to itself: a -> c -> b -> a"):
        tx(catalog, host_groups.replace, "a", "@c", author="adam")
    assert tx(catalog, host_groups.show, "a").selector == "web-*"  # unchanged


def test_refusals_leave_the_catalog_as_it_was(catalog: Catalog) -> None:
    tx(catalog, host_groups.add, "a", "web-*", author="adam")
    tx(catalog, host_groups.add, "b", "@a", author="adam")
    with pytest.raises(Conflict, match="host group 'a' exists already"):
        tx(catalog, host_groups.add, "a", "db-*", author="adam")
    with pytest.raises(Conflict, match="host group 'a' is used by group\\(s\\) b"):
        tx(catalog, host_groups.remove, "a", author="adam")
    with pytest.raises(SelectorError) as unknown:
        tx(catalog, host_groups.add, "c", "x OR @nope", author="adam")
    assert (unknown.value.position, unknown.value.problem) == (6, "there is no host group 'nope'")
    with pytest.raises(SelectorError, match="column 6"):
        tx(catalog, host_groups.add, "d", "a AND", author="adam")
    with pytest.raises(InvalidInput, match="host group name 'Bad Name'"):
        tx(catalog, host_groups.add, "Bad Name", "x", author="adam")
    with pytest.raises(NotFound, match="no host group named 'zz'"):
        tx(catalog, host_groups.replace, "zz", "x", author="adam")
    assert tx(catalog, host_groups.stored_selectors) == {"a": "web-*", "b": "@a"}
