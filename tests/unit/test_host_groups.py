"""Host groups in the catalog (SQLite): add, replace, list, remove; cycles and unknown groups refused,
a group in use kept, every change audited."""

from __future__ import annotations

import pytest

from sms_plugin import host_groups
from sms_plugin.catalog import Catalog, list_audit
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.selectors import SelectorError
from tests.unit.test_catalog import catalog  # noqa: F401 - fixture: a migrated SQLite catalog


def test_add_show_list_replace_remove(catalog: Catalog) -> None:
    host_groups.add(catalog, "eu", "site=eu*", "Europe", author="adam")
    host_groups.add(catalog, "eu-web", "@eu AND role=web", author="adam")
    assert [g.name for g in host_groups.listing(catalog)] == ["eu", "eu-web"]
    shown = host_groups.show(catalog, "eu")
    assert (shown.selector, shown.description, shown.created_by) == ("site=eu*", "Europe", "adam")
    host_groups.replace(catalog, "eu", "site=eu", "EU only", author="adam")
    assert host_groups.stored_selectors(catalog) == {"eu": "site=eu", "eu-web": "@eu AND role=web"}
    host_groups.remove(catalog, "eu-web", author="adam")
    host_groups.remove(catalog, "eu", author="adam")
    assert host_groups.listing(catalog) == []
    with catalog.session() as s:
        actions = [event.action for event in list_audit(s, actor="adam")]
    assert actions == ["host-group.remove", "host-group.remove", "host-group.replace", "host-group.add", "host-group.add"]


def test_cycles_are_refused_directly_and_through_other_groups(catalog: Catalog) -> None:
    with pytest.raises(SelectorError, match="host group 'a' would refer to itself: a -> a"):
        host_groups.add(catalog, "a", "web-* OR @a", author="adam")
    host_groups.add(catalog, "a", "web-*", author="adam")
    host_groups.add(catalog, "b", "@a AND NOT legacy", author="adam")
    host_groups.add(catalog, "c", "@b", author="adam")
    with pytest.raises(SelectorError, match="would refer to itself: a -> c -> b -> a"):
        host_groups.replace(catalog, "a", "@c", author="adam")
    assert host_groups.show(catalog, "a").selector == "web-*"  # unchanged


def test_refusals_leave_the_catalog_as_it_was(catalog: Catalog) -> None:
    host_groups.add(catalog, "a", "web-*", author="adam")
    host_groups.add(catalog, "b", "@a", author="adam")
    with pytest.raises(Conflict, match="host group 'a' exists already"):
        host_groups.add(catalog, "a", "db-*", author="adam")
    with pytest.raises(Conflict, match="host group 'a' is used by group\\(s\\) b"):
        host_groups.remove(catalog, "a", author="adam")
    with pytest.raises(SelectorError) as unknown:
        host_groups.add(catalog, "c", "x OR @nope", author="adam")
    assert (unknown.value.position, unknown.value.problem) == (6, "there is no host group 'nope'")
    with pytest.raises(SelectorError, match="column 6"):
        host_groups.add(catalog, "d", "a AND", author="adam")
    with pytest.raises(InvalidInput, match="host group name 'Bad Name'"):
        host_groups.add(catalog, "Bad Name", "x", author="adam")
    with pytest.raises(NotFound, match="no host group named 'zz'"):
        host_groups.replace(catalog, "zz", "x", author="adam")
    assert host_groups.stored_selectors(catalog) == {"a": "web-*", "b": "@a"}
