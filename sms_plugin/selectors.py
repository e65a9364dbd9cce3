"""Host selectors: which hosts a fleet target picks. Pure: text in, host names out, no I/O.

    selector = parse("role=web AND site=eu AND NOT legacy")
    names = select(selector, hosts, groups)        # hosts: HostRecord; groups: name -> Selector

Grammar (docs/fleet.md has examples)::

    selector := and ("OR" and)*
    and      := not ("AND" not)*
    not      := "NOT" not | atom
    atom     := "(" selector ")" | term ("," term)*        # a comma is an OR of terms
    term     := "@" GROUP | KEY "=" VALUE | WORD

* ``WORD`` (``web-01``, ``web-*``, ``prod-eu``) picks the hosts whose name or one of whose bare labels
  matches it (an ``fnmatch`` glob, case-sensitive), as an Ansible pattern matches hosts and groups.
* ``KEY=VALUE`` (``role=web``, ``site=eu-*``) picks the hosts carrying the label ``KEY=VALUE``; the
  value may be a glob.
* ``@GROUP`` picks what the named host group's own selector picks.
* ``AND``, ``OR`` and ``NOT`` are upper case (a lower-case ``and`` is a host name); ``NOT`` binds
  tightest, then ``AND``, then ``OR``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import translate

from sms_plugin.errors import SMSError

GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
"""Host group names: lower-case letters, digits, '-' and '_' (like host names)."""
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN = re.compile(r"\s*(?:(?P<punct>[(),])|@(?P<group>[A-Za-z0-9_-]*)|(?P<word>[A-Za-z0-9._*?\[\]!=-]+))")
KEYWORDS = ("AND", "OR", "NOT")
MAX_LENGTH = 2000
MAX_TERMS = 200
"""Terms in one selector: bounds the depth of its tree (evaluated recursively)."""
MAX_NESTING = 50
"""Parentheses and NOTs inside each other."""


class SelectorError(SMSError):
    """A selector that cannot be parsed or evaluated; ``position`` is the 1-based column."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.text, self.position, self.problem = text, position, problem
        super().__init__(f"selector error at column {position}: {problem}\n  {text}\n  {' ' * (position - 1)}^")


@dataclass(frozen=True)
class Pattern:
    """A host name or bare label, maybe a glob."""

    glob: str


@dataclass(frozen=True)
class Label:
    """A ``key=value`` label; ``value`` may be a glob."""

    key: str
    value: str


@dataclass(frozen=True)
class Group:
    name: str
    column: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Selector


@dataclass(frozen=True)
class And:
    left: Selector
    right: Selector


@dataclass(frozen=True)
class Or:
    left: Selector
    right: Selector


Selector = Pattern | Label | Group | Not | And | Or


@dataclass(frozen=True)
class HostRecord:
    """What a selector reads of a host."""

    name: str
    kind: str
    labels: frozenset[str] = frozenset()


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", ",", "group", "word", "AND", "OR", "NOT", "end"
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            rest = text[at:]
            if not rest.strip():
                break
            column = at + len(rest) - len(rest.lstrip()) + 1
            raise SelectorError(text, column, f"unexpected character {text[column - 1]!r}")
        start = match.start(match.lastgroup or 0) + 1
        if match["punct"]:
            tokens.append(_Token(match["punct"], match["punct"], start))
        elif match["group"] is not None:
            if not GROUP_NAME.fullmatch(match["group"]):
                raise SelectorError(text, start - 1, "a group is @NAME: lower-case letters, digits, '-' or '_'")
            tokens.append(_Token("group", match["group"], start - 1))
        else:
            word = match["word"]
            tokens.append(_Token(word if word in KEYWORDS else "word", word, start))
        at = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.terms = 0
        self.nesting = 0

    def deeper(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise SelectorError(self.text, token.column, f"more than {MAX_NESTING} parentheses and NOTs inside each other")

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self, kind: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            raise self.error(token, f"expected {kind!r}")
        self.at += 1
        return token

    def error(self, token: _Token, expected: str) -> SelectorError:
        found = "the end" if token.kind == "end" else repr(token.text)
        return SelectorError(self.text, token.column, f"{expected}, found {found}")

    def selector(self) -> Selector:
        node = self.conjunction()
        while self.peek().kind == "OR":
            self.at += 1
            node = Or(node, self.conjunction())
        return node

    def conjunction(self) -> Selector:
        node = self.negation()
        while self.peek().kind == "AND":
            self.at += 1
            node = And(node, self.negation())
        return node

    def negation(self) -> Selector:
        if self.peek().kind == "NOT":
            self.deeper(self.peek())
            self.at += 1
            node = Not(self.negation())
            self.nesting -= 1
            return node
        return self.atom()

    def atom(self) -> Selector:
        if self.peek().kind == "(":
            self.deeper(self.peek())
            self.at += 1
            node = self.selector()
            self.take(")")
            self.nesting -= 1
            return node
        node = self.term()
        while self.peek().kind == ",":
            self.at += 1
            node = Or(node, self.term())
        return node

    def term(self) -> Selector:
        token = self.peek()
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise SelectorError(self.text, token.column, f"a selector has at most {MAX_TERMS} terms")
        if token.kind == "group":
            self.at += 1
            return Group(token.text, token.column)
        if token.kind != "word":
            raise self.error(token, "expected a host name, glob, label, @group, NOT or '('")
        self.at += 1
        key, equals, value = token.text.partition("=")
        if not equals:
            return Pattern(token.text)
        if not _LABEL_KEY.fullmatch(key) or not value or "=" in value:
            raise SelectorError(self.text, token.column, f"a label is KEY=VALUE (one '=', a plain KEY), not {token.text!r}")
        return Label(key, value)


def parse(text: str) -> Selector:
    """The selector ``text`` describes; SelectorError (with the column) if it is malformed."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(text[:40] + "...", 1, f"a selector has at most {MAX_LENGTH} characters")
    if not text.strip():
        raise SelectorError(text, 1, "the selector is empty")
    parser = _Parser(text)
    node = parser.selector()
    if parser.peek().kind != "end":
        raise parser.error(parser.peek(), "expected AND, OR or the end")
    return node


def render(node: Selector) -> str:
    """The selector as text; ``parse(render(node)) == node``."""
    if isinstance(node, Pattern):
        return node.glob
    if isinstance(node, Label):
        return f"{node.key}={node.value}"
    if isinstance(node, Group):
        return f"@{node.name}"
    if isinstance(node, Not):
        inner = render(node.operand)
        return f"NOT {inner}" if isinstance(node.operand, Pattern | Label | Group | Not) else f"NOT ({inner})"
    word, left_wrap, right_wrap = (
        ("AND", (Or,), (Or, And)) if isinstance(node, And) else ("OR", (), (Or,))
    )
    left, right = render(node.left), render(node.right)
    if isinstance(node.left, left_wrap):
        left = f"({left})"
    if isinstance(node.right, right_wrap):  # operators are left-associative: keep the tree's shape
        right = f"({right})"
    return f"{left} {word} {right}"


# ---------------------------------------------------------------- evaluation


def group_terms(node: Selector) -> list[Group]:
    """The ``@group`` terms of ``node``, left to right."""
    if isinstance(node, Group):
        return [node]
    if isinstance(node, Not):
        return group_terms(node.operand)
    if isinstance(node, And | Or):
        return group_terms(node.left) + group_terms(node.right)
    return []


def groups_named(node: Selector) -> set[str]:
    """The host groups ``node`` refers to directly."""
    return {group.name for group in group_terms(node)}


def cycle_through(name: str, node: Selector, groups: Mapping[str, Selector]) -> list[str] | None:
    """The chain ``[name, ..., name]`` if group ``name`` with selector ``node`` would reach itself
    through ``groups`` (the other stored groups), else None."""
    pending: list[list[str]] = [[name, child] for child in sorted(groups_named(node))]
    seen: set[str] = set()
    while pending:
        chain = pending.pop()
        current = chain[-1]
        if current == name:
            return chain
        if current in seen or current not in groups:
            continue
        seen.add(current)
        pending.extend(chain + [child] for child in sorted(groups_named(groups[current])))
    return None


def _picked(node: Pattern | Label, hosts: list[HostRecord]) -> frozenset[str]:
    """The names of the hosts a term picks (its glob compiled once)."""
    if isinstance(node, Label):
        key, value = f"{node.key}=", re.compile(translate(node.value))
        return frozenset(
            host.name for host in hosts
            if any(label.startswith(key) and value.match(label, len(key)) for label in host.labels)
        )
    glob = re.compile(translate(node.glob))
    return frozenset(
        host.name for host in hosts
        if glob.match(host.name) or any("=" not in label and glob.match(label) for label in host.labels)
    )


def select(text: str, hosts: Iterable[HostRecord], groups: Mapping[str, str]) -> list[HostRecord]:
    """The hosts selector ``text`` picks, in the order given; ``groups`` maps each stored host
    group's name to its selector text. SelectorError names the text and column of a problem."""
    fleet = list(hosts)
    everyone = frozenset(host.name for host in fleet)
    parsed: dict[str, Selector] = {}

    def group_names(group: Group, source: str, through: tuple[str, ...]) -> frozenset[str]:
        if group.name in through:
            raise SelectorError(source, group.column, f"host group cycle {' -> '.join((*through, group.name))}")
        if group.name not in groups:
            raise SelectorError(source, group.column, f"there is no host group {group.name!r}")
        if group.name not in parsed:
            parsed[group.name] = parse(groups[group.name])
        return names(parsed[group.name], groups[group.name], (*through, group.name))

    def names(node: Selector, source: str, through: tuple[str, ...]) -> frozenset[str]:
        if isinstance(node, Pattern | Label):
            return _picked(node, fleet)
        if isinstance(node, Group):
            return group_names(node, source, through)
        if isinstance(node, Not):
            return everyone - names(node.operand, source, through)
        if isinstance(node, And):
            return names(node.left, source, through) & names(node.right, source, through)
        return names(node.left, source, through) | names(node.right, source, through)

    try:
        picked = names(parse(text), text, ())
    except RecursionError:  # groups within groups, each near the limits: refused, never a crash
        raise SelectorError(text, 1, "the selector and its host groups nest too deeply") from None
    return [host for host in fleet if host.name in picked]
