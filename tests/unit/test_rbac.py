"""The authorization policy: deny by default, what each role grants, access rules that narrow."""

from __future__ import annotations

import pytest

from sms_plugin.gateway.principal import Principal
from sms_plugin.gateway.rbac import ACTIONS, ANY, Rule, Target, decide, decide_selection, granted_actions


def who(*roles: str, groups: tuple[str, ...] = (), username: str = "someone") -> Principal:
    return Principal(subject=f"id-{username}", username=username, roles=frozenset(roles), groups=frozenset(groups))


PAY_EU = Target("pay-report", frozenset({"payments"}), "eu-1", frozenset({"prod-eu"}))
PAY_US = Target("pay-report", frozenset({"payments"}), "us-1", frozenset({"prod-us"}))
OTHER_EU = Target("backup", frozenset({"ops"}), "eu-1", frozenset({"prod-eu"}))
TEAM_PAYMENTS = Rule("group", "team-payments", frozenset({"start", "stop"}), script_tag="payments", host_label="prod-eu", id=7)

EXPECTED = {
    "sms-viewer": {"read"},
    "sms-operator": {"read", "start", "stop"},
    "sms-author": {"read", "author"},
    "sms-admin": set(ACTIONS),
}


@pytest.mark.parametrize("role", sorted(EXPECTED))
@pytest.mark.parametrize("action", ACTIONS)
def test_each_role_grants_exactly_its_actions(role, action):
    decision = decide(who(role), action, PAY_EU, [])
    assert decision.allowed is (action in EXPECTED[role]), decision.reason


@pytest.mark.parametrize("roles", [(), ("offline_access", "uma_authorization"), ("SMS-ADMIN",)])
def test_deny_by_default_without_an_sms_role(roles):
    for action in ACTIONS:
        decision = decide(who(*roles, username="nobody"), action, ANY, [])
        assert not decision.allowed
        assert "nobody has no SMS role" in decision.reason


def test_denial_names_the_roles_needed():
    decision = decide(who("sms-viewer", username="viola"), "start", PAY_EU, [])
    assert decision.reason == "'start' needs role sms-operator or sms-admin; viola has sms-viewer"


def test_roles_add_up():
    assert granted_actions({"sms-viewer", "sms-author", "other"}) == {"read", "author"}
    assert decide(who("sms-operator", "sms-author"), "author", PAY_EU, []).allowed


def test_unknown_action_is_denied():
    assert not decide(who("sms-admin"), "delete-everything", ANY, []).allowed  # type: ignore[arg-type]


def test_narrowed_rule_needs_tag_and_label_together():
    paula = who("sms-operator", groups=("team-payments",), username="paula")
    assert decide(paula, "start", PAY_EU, [TEAM_PAYMENTS]).allowed
    assert decide(paula, "stop", PAY_EU, [TEAM_PAYMENTS]).allowed
    wrong_host = decide(paula, "start", PAY_US, [TEAM_PAYMENTS])
    assert not wrong_host.allowed
    assert wrong_host.reason == (
        "paula may start only as access rules allow (rule 7 (group team-payments): start, stop on scripts tagged "
        "payments on hosts labelled prod-eu); script pay-report (tags: payments) on host us-1 (labels: prod-us) "
        "matches none"
    )
    assert not decide(paula, "start", OTHER_EU, [TEAM_PAYMENTS]).allowed


def test_rule_narrows_only_the_actions_it_lists():
    paula = who("sms-operator", groups=("team-payments",))
    assert decide(paula, "read", OTHER_EU, [TEAM_PAYMENTS]).allowed


def test_rules_never_widen_a_role():
    viewer = who("sms-viewer", groups=("team-payments",))
    assert not decide(viewer, "start", PAY_EU, [TEAM_PAYMENTS]).allowed


def test_rules_of_other_subjects_do_not_apply():
    otto = who("sms-operator", groups=("team-ops",), username="otto")
    assert decide(otto, "start", PAY_US, [TEAM_PAYMENTS]).allowed


def test_admin_is_never_narrowed():
    adam = who("sms-admin", groups=("team-payments",))
    assert decide(adam, "start", PAY_US, [TEAM_PAYMENTS]).allowed


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        (Rule("user", "paula", frozenset({"start"}), script_glob="pay-*"), True),
        (Rule("user", "paula", frozenset({"start"}), script_glob="pay"), False),
        (Rule("user", "paula", frozenset({"start"}), host_glob="us-?"), True),
        (Rule("user", "paula", frozenset({"start"}), host_glob="eu-*"), False),
        (Rule("role", "sms-operator", frozenset({"start"}), host_label="prod-us"), True),
        (Rule("role", "sms-viewer", frozenset({"start"}), host_label="nowhere"), True),  # not her role: no narrowing
        (Rule("user", "paula", frozenset({"start"}), script_glob="PAY-*"), False),  # case-sensitive
    ],
)
def test_subjects_and_globs(rule, allowed):
    paula = who("sms-operator", username="paula")
    assert decide(paula, "start", PAY_US, [rule]).allowed is allowed


def test_any_of_several_rules_may_allow():
    rules = [TEAM_PAYMENTS, Rule("group", "team-payments", frozenset({"start"}), host_glob="us-*", id=8)]
    paula = who("sms-operator", groups=("team-payments",))
    assert decide(paula, "start", PAY_US, rules).allowed
    assert "rule 8" in decide(paula, "start", PAY_US, rules).reason


def test_a_condition_on_an_unnamed_host_fails_but_a_collection_is_allowed():
    paula = who("sms-operator", groups=("team-payments",))
    script_only = Target("pay-report", frozenset({"payments"}))
    assert not decide(paula, "start", script_only, [TEAM_PAYMENTS]).allowed
    assert decide(paula, "start", ANY, [TEAM_PAYMENTS]).allowed


def test_rule_description_without_conditions():
    assert Rule("role", "sms-operator", frozenset({"read"})).describe() == (
        "rule (role sms-operator): read on scripts of any name on hosts of any name"
    )


def test_rule_description_with_every_condition_and_with_some():
    full = Rule("group", "team-payments", frozenset({"start", "stop"}), "pay-*", "payments", "web-*", "prod-eu", id=3)
    assert full.describe() == (
        "rule 3 (group team-payments): start, stop on scripts named pay-* tagged payments"
        " on hosts named web-* labelled prod-eu"
    )
    some = Rule("user", "otto", frozenset({"read"}), script_tag="payments", host_glob="db-*")
    assert some.describe() == "rule (user otto): read on scripts tagged payments on hosts named db-*"


LOCAL = Target("tidy", frozenset(), "local", frozenset(), host_admins_only=True)


@pytest.mark.parametrize("action", ["start", "author"])
def test_an_admin_only_host_takes_starts_and_scripts_from_admins_only(action):
    open_rule = Rule("role", "sms-operator", frozenset({action}), host_glob="local")
    for roles in (("sms-operator", "sms-author"), ("sms-operator",), ("sms-author",)):
        decision = decide(who(*roles, username="olga"), action, LOCAL, [open_rule])
        assert not decision.allowed
        assert decision.reason.endswith(f"where only sms-admin may {action}") or "needs role" in decision.reason
    assert decide(who("sms-admin"), action, LOCAL, []).allowed


def test_an_admin_only_host_can_still_be_read_and_stopped():
    assert decide(who("sms-viewer"), "read", LOCAL, []).allowed
    assert decide(who("sms-operator"), "stop", LOCAL, []).allowed


# ---------------------------------------------------------------- selections (fleet targets)

WEB_EU = [Target("rotate-logs", frozenset({"ops"}), f"web-0{n}", frozenset({"role=web", "prod-eu"})) for n in (1, 2)]
WEB_US = Target("rotate-logs", frozenset({"ops"}), "web-09", frozenset({"role=web", "prod-us"}))
EU_ONLY = Rule("group", "team-eu", frozenset({"start"}), host_label="prod-eu", id=4)


def test_a_selection_inside_the_rules_is_allowed_as_a_whole():
    erik = who("sms-operator", groups=("team-eu",), username="erik")
    decision = decide_selection(erik, "start", WEB_EU, [EU_ONLY])
    assert (decision.allowed, decision.refused) == (True, ())
    assert decision.reason == "erik may start on all 2 selected host(s)"


def test_one_forbidden_host_refuses_the_whole_selection_and_is_named():
    erik = who("sms-operator", groups=("team-eu",), username="erik")
    decision = decide_selection(erik, "start", [*WEB_EU, WEB_US], [EU_ONLY])
    assert not decision.allowed
    assert decision.refused == ("web-09",)
    assert decision.reason.startswith("erik may not start on 1 of the 3 selected host(s): web-09; the selection is refused")
    assert "rule 4 (group team-eu)" in decision.reason


def test_admin_only_hosts_and_roles_refuse_a_selection_too():
    local = Target("rotate-logs", frozenset(), "local", frozenset(), host_admins_only=True)
    operator = who("sms-operator", username="otto")
    assert decide_selection(operator, "start", [*WEB_EU, local], []).refused == ("local",)
    assert decide_selection(who("sms-admin"), "start", [*WEB_EU, local], []).allowed
    assert decide_selection(who("sms-viewer"), "start", WEB_EU, []).refused == ("web-01", "web-02")


def test_an_empty_selection_starts_nothing():
    decision = decide_selection(who("sms-admin"), "start", [], [])
    assert not decision.allowed
    assert decision.reason == "the selection picks no host: there is nothing to start"
