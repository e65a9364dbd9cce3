"""Ansible inventories (INI and YAML) read the way ``ansible-inventory --list`` reads them: groups,
``children``, group and host variables with Ansible's precedence (``all``, then groups from the
outermost to the innermost, alphabetically within a depth, then the host's own), and host ranges
such as ``web[01:20].example.com``. Pure: text in, hosts out.

Values are kept as Ansible's INI parser gives them for the variables SMS reads (``ansible_host``,
``ansible_port``, ``ansible_user`` and the key and password variables); Jinja2 templates and
vault values are not evaluated.
"""

from __future__ import annotations

import ast
import re
import shlex
import string
from dataclasses import dataclass, field
from typing import Any

import yaml

from sms_plugin.errors import InvalidInput

_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_SECTION = re.compile(r"^\[([^\]:]+)(?::(vars|children))?\]\s*$")


class Vaulted(str):
    """A ``!vault`` value: kept encrypted, never decrypted by SMS."""


class Loader(yaml.SafeLoader):
    """YAML with Ansible's ``!vault`` (and ``!unsafe``) tags."""


Loader.add_constructor("!vault", lambda loader, node: Vaulted(loader.construct_scalar(node)))  # type: ignore[arg-type]
Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


@dataclass
class AnsibleHost:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    """Every group the host is in, directly or as a member of a child group (never ``all``/``ungrouped``)."""


@dataclass
class _Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: set[str] = field(default_factory=set)
    vars: dict[str, Any] = field(default_factory=dict)


def expand(pattern: str) -> list[str]:
    """The host names of ``web[01:03].x``: ``web01.x``, ``web02.x``, ``web03.x`` (letters too: ``[a:c]``)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    first, last, step = match[1], match[2], int(match[3] or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") else 0
        items = [str(n).zfill(width) for n in range(int(first), int(last) + 1, step)]
    elif len(first) == len(last) == 1 and first in string.ascii_letters and last in string.ascii_letters:
        items = [chr(n) for n in range(ord(first), ord(last) + 1, step)]
    else:
        raise InvalidInput(f"host range {match[0]!r} in {pattern!r}: use [01:20] or [a:f]")
    return [f"{head}{item}{rest}" for item in items for rest in expand(tail)]


def _ini_value(text: str) -> Any:
    """An INI variable value as Ansible's INI parser reads it: a Python literal if it is one, else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ini_pairs(words: list[str], where: str) -> dict[str, Any]:
    pairs = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals:
            raise InvalidInput(f"{where}: expected KEY=VALUE, not {word!r}")
        pairs[key] = _ini_value(value)
    return pairs


def parse_ini(text: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"line {number}"
        if heading := _SECTION.match(line):
            section, kind = heading[1], heading[2] or "hosts"
            groups.setdefault(section, _Group())
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:
            raise InvalidInput(f"{where}: {error}") from None
        group = groups[section]
        if kind == "hosts":
            for name in expand(words[0]):
                group.hosts.setdefault(name, {}).update(_ini_pairs(words[1:], where))
        elif kind == "children":
            groups.setdefault(words[0], _Group())
            group.children.add(words[0])
        else:
            key, _, value = line.partition("=")
            group.vars[key.strip()] = _ini_value(value.strip())
    return groups


def parse_yaml(text: str) -> dict[str, _Group]:
    try:
        document = yaml.load(text, Loader=Loader) or {}
    except yaml.YAMLError as error:
        raise InvalidInput(f"not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("an Ansible YAML inventory is a mapping of group names")
    groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}

    def visit(name: str, body: Any) -> None:
        group = groups.setdefault(name, _Group())
        body = body or {}
        if not isinstance(body, dict):
            raise InvalidInput(f"group {name!r}: expected hosts, children and vars, not {type(body).__name__}")
        for pattern, host_vars in (body.get("hosts") or {}).items():
            for host in expand(str(pattern)):
                group.hosts.setdefault(host, {}).update(host_vars or {})
        group.vars.update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            group.children.add(child)
            visit(child, child_body)

    for name, body in document.items():
        visit(name, body)
    return groups


def resolve(groups: dict[str, _Group]) -> list[AnsibleHost]:
    """Every host with its groups and its variables after Ansible's precedence."""
    groups["all"].children |= set(groups) - {"all"}
    members: dict[str, set[str]] = {}

    def hosts_of(name: str, trail: tuple[str, ...]) -> set[str]:
        if name in trail:
            raise InvalidInput(f"group {name!r} is its own child: {' -> '.join((*trail, name))}")
        if name not in members:
            found = set(groups[name].hosts)
            for child in sorted(groups[name].children - {"all"}):  # sorted: the same cycle is named each time
                found |= hosts_of(child, (*trail, name))
            members[name] = found
        return members[name]

    hosts_of("all", ())
    depth = {name: 0 if name == "all" else 1 for name in groups}  # the longest way down from ``all``
    for _ in groups:
        for name, group in groups.items():
            for child in group.children - {"all"}:
                depth[child] = max(depth[child], depth[name] + 1 if name != "all" else 1)
    hosts: dict[str, AnsibleHost] = {}
    for group_name in sorted(groups, key=lambda group: (depth[group], group)):
        for host in sorted(members[group_name]):
            entry = hosts.setdefault(host, AnsibleHost(host))
            entry.vars.update(groups[group_name].vars)
            if group_name not in ("all", "ungrouped"):
                entry.groups.add(group_name)
    for group in groups.values():
        for host, host_vars in group.hosts.items():
            hosts[host].vars.update(host_vars)
    return sorted(hosts.values(), key=lambda host: host.name)


def read(text: str, *, yaml_format: bool) -> list[AnsibleHost]:
    """The hosts of an Ansible inventory (INI, or YAML when ``yaml_format``)."""
    return resolve(parse_yaml(text) if yaml_format else parse_ini(text))
