"""Who may do what: SMS's authorization policy, pure and in one place (no I/O, no HTTP).

Roles grant actions everywhere; access rules then *narrow* them, never widen them::

    decision = decide(principal, "start", Target("pay-report", frozenset({"payments"}), "eu-1", frozenset({"prod-eu"})), rules)
    if not decision.allowed:
        raise Forbidden(decision.reason)

Semantics (docs/access.md has examples):

1. Deny by default. A role grants actions: ``sms-viewer`` read; ``sms-operator`` read, start, stop;
   ``sms-author`` read, author; ``sms-admin`` everything, including ``admin`` (access rules, hosts,
   webhooks, audit). No role granting the action: denied.
2. ``sms-admin`` is never narrowed (so an admin can always repair the rules).
3. A rule *applies* to a principal when its subject matches: ``group:NAME`` (a Keycloak group),
   ``user:NAME`` (the username) or ``role:NAME`` (a role the principal has).
4. A rule narrows only the actions it lists. For an action that at least one applicable rule lists,
   the principal may act only on targets that one of those rules matches; actions no applicable
   rule lists stay as the roles grant them.
5. A rule matches a target when all its given conditions hold: script name glob, script tag, host
   name glob, host label (``fnmatch`` globs, case-sensitive; an omitted condition matches anything).
   A condition on a script or host the target does not name fails, except for :data:`ANY`, the
   target of a collection (a list request): it is allowed when the role grants the action and some
   rule for it applies, and the caller filters the items with one decision each.
6. An *admin-only host* (the worker's own machine: a local host block, unless an admin turned
   its ``admins_only`` off) takes starts and scripts from ``sms-admin`` only: ``start`` and
   ``author`` on it are denied to every other role, whatever the rules say.
7. A *selection* (the hosts a selector picks, a fleet target) is judged host by host with
   :func:`decide_selection`: it is refused as a whole if the principal may not act on any one of
   them, and the refusal names those hosts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal, Protocol, get_args

Action = Literal["read", "start", "stop", "author", "admin"]
ACTIONS: tuple[Action, ...] = get_args(Action)
#: Actions an access rule may narrow (``admin`` belongs to sms-admin alone).
RULE_ACTIONS: tuple[Action, ...] = ("read", "start", "stop", "author")
SubjectKind = Literal["group", "user", "role"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = get_args(SubjectKind)

ADMIN_ROLE = "sms-admin"
ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    "sms-viewer": frozenset({"read"}),
    "sms-operator": frozenset({"read", "start", "stop"}),
    "sms-author": frozenset({"read", "author"}),
    ADMIN_ROLE: frozenset(ACTIONS),
}


class PrincipalLike(Protocol):
    """What the policy reads of a caller (``sms_plugin.gateway.principal.Principal`` fits)."""

    username: str
    roles: frozenset[str]
    groups: frozenset[str]


@dataclass(frozen=True)
class Target:
    """What an action is about: a script (with its tags) and/or a host (with its labels)."""

    script: str | None = None
    script_tags: frozenset[str] = frozenset()
    host: str | None = None
    host_labels: frozenset[str] = frozenset()
    host_admins_only: bool = False
    """The host runs scripts on the worker's own machine: see the module docstring, point 6."""


#: Actions only sms-admin may do on an admin-only host (point 6).
ADMIN_ONLY_HOST_ACTIONS: frozenset[Action] = frozenset({"start", "author"})

#: The target of a collection (list requests); see the module docstring, point 5.
ANY = Target()


@dataclass(frozen=True)
class Rule:
    """An access rule: ``subject`` may do ``actions`` only on the targets it matches."""

    subject_kind: SubjectKind
    subject: str
    actions: frozenset[Action]
    script_glob: str | None = None
    script_tag: str | None = None
    host_glob: str | None = None
    host_label: str | None = None
    id: int | None = field(default=None, compare=False)

    def applies_to(self, principal: PrincipalLike) -> bool:
        if self.subject_kind == "group":
            return self.subject in principal.groups
        if self.subject_kind == "user":
            return self.subject == principal.username
        return self.subject in principal.roles

    def matches(self, target: Target) -> bool:
        if target == ANY:
            return True
        return (
            _glob(self.script_glob, target.script)
            and _member(self.script_tag, target.script_tags, target.script)
            and _glob(self.host_glob, target.host)
            and _member(self.host_label, target.host_labels, target.host)
        )

    def describe(self) -> str:
        """E.g. ``rule 3 (group team-payments): start, stop on scripts tagged payments on hosts labelled prod-eu``."""
        scripts = _narrowed(self.script_glob, "tagged", self.script_tag)
        hosts = _narrowed(self.host_glob, "labelled", self.host_label)
        where = f"scripts {scripts or 'of any name'} on hosts {hosts or 'of any name'}"
        label = f"rule {self.id}" if self.id is not None else "rule"
        return f"{label} ({self.subject_kind} {self.subject}): {', '.join(sorted(self.actions))} on {where}"


def _glob(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and fnmatchcase(value, pattern))


def _member(wanted: str | None, have: frozenset[str], owner: str | None) -> bool:
    return wanted is None or (owner is not None and wanted in have)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def granted_actions(roles: Iterable[str]) -> frozenset[Action]:
    """The actions the SMS roles among ``roles`` grant (unknown roles grant nothing)."""
    granted: set[Action] = set()
    for role in roles:
        granted |= ROLE_ACTIONS.get(role, frozenset())
    return frozenset(granted)


def describe_target(target: Target) -> str:
    if target == ANY:
        return "the collection"
    parts = []
    if target.script is not None:
        tags = ", ".join(sorted(target.script_tags)) or "none"
        parts.append(f"script {target.script} (tags: {tags})")
    if target.host is not None:
        labels = ", ".join(sorted(target.host_labels)) or "none"
        parts.append(f"host {target.host} (labels: {labels})")
    return " on ".join(parts)


def narrowing_rules(principal: PrincipalLike, action: Action, rules: Iterable[Rule]) -> list[Rule]:
    """The rules that narrow ``action`` for ``principal`` (none for sms-admin, who is never narrowed)."""
    if ADMIN_ROLE in principal.roles:
        return []
    return [rule for rule in rules if action in rule.actions and rule.applies_to(principal)]


def decide(principal: PrincipalLike, action: Action, target: Target, rules: Iterable[Rule]) -> Decision:
    """May ``principal`` do ``action`` on ``target`` under ``rules``? The reason says why (not)."""
    if action not in ACTIONS:
        return Decision(False, f"unknown action {action!r}")
    sms_roles = sorted(set(principal.roles) & ROLE_ACTIONS.keys())
    if ADMIN_ROLE in principal.roles:
        return Decision(True, f"role {ADMIN_ROLE} may do everything")
    granting = [role for role in sms_roles if action in ROLE_ACTIONS[role]]
    if not granting:
        needed = " or ".join(role for role, actions in ROLE_ACTIONS.items() if action in actions)
        have = ", ".join(sms_roles) or "no SMS role"
        return Decision(False, f"{action!r} needs role {needed}; {principal.username} has {have}")
    if target.host_admins_only and action in ADMIN_ONLY_HOST_ACTIONS:
        return Decision(
            False,
            f"{principal.username} may not {action} on host {target.host}: it is the worker's own machine, "
            f"where only {ADMIN_ROLE} may {action}",
        )
    narrowing = narrowing_rules(principal, action, rules)
    if not narrowing:
        return Decision(True, f"role {granting[0]} allows {action}")
    for rule in narrowing:
        if rule.matches(target):
            return Decision(True, f"role {granting[0]} allows {action}, within {rule.describe()}")
    limits = "; ".join(rule.describe() for rule in narrowing)
    return Decision(
        False, f"{principal.username} may {action} only as access rules allow ({limits}); {describe_target(target)} matches none"
    )


@dataclass(frozen=True)
class SelectionDecision(Decision):
    refused: tuple[str, ...] = ()
    """The selected hosts the principal may not act on (empty when allowed)."""


def decide_selection(
    principal: PrincipalLike, action: Action, targets: Iterable[Target], rules: Iterable[Rule]
) -> SelectionDecision:
    """May ``principal`` do ``action`` on every one of ``targets`` (one per selected host)? All or nothing:
    one refused host refuses the selection, and the reason names every refused host."""
    rules = list(rules)
    judged = [(target, decide(principal, action, target, rules)) for target in targets]
    if not judged:
        return SelectionDecision(False, "the selection picks no host: there is nothing to " + action)
    refused = [(target, decision) for target, decision in judged if not decision.allowed]
    if not refused:
        return SelectionDecision(True, f"{principal.username} may {action} on all {len(judged)} selected host(s)")
    names = tuple(str(target.host) for target, _ in refused)
    return SelectionDecision(
        False,
        f"{principal.username} may not {action} on {len(names)} of the {len(judged)} selected host(s): "
        f"{', '.join(names)}; the selection is refused as a whole (first reason: {refused[0][1].reason})",
        names,
    )


def _narrowed(glob: str | None, marked: str, mark: str | None) -> str:
    """E.g. ``named pay-* tagged payments``: how a rule narrows scripts or hosts ("" if it does not)."""
    return " ".join(part for part in (f"named {glob}" if glob else "", f"{marked} {mark}" if mark else "") if part)


#: What a face may offer, as the policy action each one needs (the gateway's routes authorize with
#: the same action; tests/integration/test_gateway_api.py checks the two agree for every user).
CAPABILITIES: dict[str, Action] = {
    "script.read": "read",
    "script.add": "author",
    "script.edit": "author",
    "script.remove": "author",
    "run.read": "read",
    "run.start": "start",
    "run.stop": "stop",
    "host.read": "read",
    "host.add": "admin",
    "host.trust": "admin",
    "host.check": "admin",
    "host.labels": "admin",
    "host-group.manage": "admin",
    "access.manage": "admin",
    "access.preview": "admin",
    "webhook.manage": "admin",
    "audit.read": "admin",
}


def capabilities(principal: PrincipalLike, rules: Iterable[Rule]) -> dict[str, bool]:
    """Each of :data:`CAPABILITIES` → whether ``principal`` may do it somewhere (:func:`decide` on the
    collection, :data:`ANY`): what a face shows. Every single request is still judged on its target."""
    rules = list(rules)
    allowed = {action: decide(principal, action, ANY, rules).allowed for action in ACTIONS}
    return {capability: allowed[action] for capability, action in CAPABILITIES.items()}
