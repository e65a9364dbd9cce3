"""Fleet policies and outcomes: parsing with clear refusals, shares, the run's verdict."""

from __future__ import annotations

import pytest

from sms_plugin.errors import InvalidInput
from sms_plugin.fleet.outcome import HostOutcome, summary_rows, verdict
from sms_plugin.fleet.policy import DEFAULT_PARALLEL, FleetPolicy


def test_an_empty_policy_runs_fifty_at_a_time_without_batches_or_limit() -> None:
    policy = FleetPolicy.parse(None)
    assert (policy.width(), policy.batch_size(200), policy.failures_allowed(200)) == (DEFAULT_PARALLEL, 200, None)
    assert FleetPolicy.parse({}) == policy


def test_counts_and_percentages() -> None:
    policy = FleetPolicy.parse({"parallel": 20, "batch": "10%", "batch_pause_seconds": 2, "max_failures": "5%"})
    assert (policy.width(), policy.batch_size(200), policy.failures_allowed(200)) == (20, 20, 10)
    assert policy.batch_size(5) == 1  # 10 % of 5 hosts, rounded up
    assert policy.failures_allowed(19) == 0  # 5 % of 19, rounded down
    assert FleetPolicy.parse({"batch": 10, "max_failures": 3}).as_dict() == {
        "parallel": None, "batch": "10", "batch_pause_seconds": 0.0, "max_failures": "3", "fail_fast": False,
        "deadline_seconds": None}
    assert FleetPolicy.parse({"fail_fast": True}).failures_allowed(100) == 0
    assert FleetPolicy.parse({"deadline_seconds": 90}).deadline_seconds == 90.0
    assert FleetPolicy.parse({"fail_fast": True, "max_failures": "0"}).failures_allowed(100) == 0


@pytest.mark.parametrize(("data", "message"), [
    ([1], "the fleet policy must be an object, not list"),
    ({"forks": 5}, "the fleet policy has no field(s) forks: use batch, batch_pause_seconds, deadline_seconds, fail_fast, max_failures, parallel"),
    ({"parallel": 0}, "parallel must be a whole number of hosts from 1 to 5000, not 0"),
    ({"parallel": True}, "parallel must be a whole number of hosts from 1 to 5000, not True"),
    ({"parallel": "5"}, "parallel must be a whole number of hosts from 1 to 5000, not '5'"),
    ({"batch": "ten"}, 'batch must be a number of hosts ("10") or a percentage of them ("10%"), not \'ten\''),
    ({"batch": "0"}, "batch must be at least 1 host(s), not '0'"),
    ({"batch": "150%"}, "batch as a percentage must be from 1% to 100%, not '150%'"),
    ({"batch": "-1"}, 'batch must be a number of hosts ("10") or a percentage of them ("10%"), not \'-1\''),
    ({"max_failures": "101%"}, "max_failures as a percentage must be from 0% to 100%, not '101%'"),
    ({"max_failures": 2.5}, 'max_failures must be a number of hosts ("10") or a percentage of them ("10%"), not 2.5'),
    ({"batch": "5", "batch_pause_seconds": -1}, "batch_pause_seconds must be a number of seconds from 0 to 86400, not -1"),
    ({"batch_pause_seconds": 5}, "batch_pause_seconds is the pause between batches: give batch too"),
    ({"fail_fast": "yes"}, "fail_fast must be true or false, not 'yes'"),
    ({"deadline_seconds": 0}, "deadline_seconds must be a number of seconds above 0 and at most 604800, not 0"),
    ({"deadline_seconds": "60"}, "deadline_seconds must be a number of seconds above 0 and at most 604800, not '60'"),
    ({"deadline_seconds": 10**6}, "deadline_seconds must be a number of seconds above 0 and at most 604800, not 1000000"),
    ({"fail_fast": True, "max_failures": "3"}, "fail_fast means max_failures 0: give one of them, not fail_fast with max_failures 3"),
])
def test_a_bad_policy_is_refused_with_a_clear_sentence(data: object, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        FleetPolicy.parse(data)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_the_verdict_counts_every_kind_of_failure_and_names_the_hosts() -> None:
    outcomes = [
        HostOutcome("web-01", "succeeded", 0, 1.0),
        HostOutcome("web-07", "failed", 3, 1.0, "rotate-logs failed with exit code 3"),
        HostOutcome("web-11", "failed", 1, 1.0),
        HostOutcome("db-02", "unreachable", None, 0.1, "connection refused"),
    ]
    assert verdict("rotate-logs", outcomes) == "rotate-logs failed on 3 of 4 hosts (2 failed, 1 unreachable): web-07, web-11, db-02"
    assert verdict("rotate-logs", outcomes[:1]) is None


def test_the_verdict_names_twenty_hosts_at_most() -> None:
    outcomes = [HostOutcome(f"h{i}", "skipped") for i in range(25)]
    message = verdict("x", outcomes)
    assert message is not None and message.endswith("h19 and 5 more") and "(25 skipped)" in message


def test_summary_rows_have_the_table_columns() -> None:
    rows = summary_rows([HostOutcome("a", "failed", 2, 1.234, "x failed with exit code 2; last stderr: no"),
                         HostOutcome("b", "skipped", message="not started")])
    assert rows == [
        {"host": "a", "state": "failed", "exit code": 2, "duration": "1.2 s", "last stderr": "x failed with exit code 2; last stderr: no"},
        {"host": "b", "state": "skipped", "exit code": "", "duration": "", "last stderr": "not started"},
    ]
