"""The fleet scheduler with real asyncio: parallelism, rolling batches, failure limits, stop."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_plugin.fleet.outcome import HostOutcome, HostState
from sms_plugin.fleet.policy import FleetPolicy
from sms_plugin.fleet.scheduler import Fleet


class Hosts:
    """A fake fleet: each host sleeps a little and ends in the state the test gives it; records
    when each started and ended, and how many ran at once."""

    def __init__(self, states: dict[str, HostState] | None = None, seconds: float = 0.01) -> None:
        self.states = states or {}
        self.seconds = seconds
        self.started: list[str] = []
        self.ended: list[str] = []
        self.windows: dict[str, tuple[float, float]] = {}
        self.running = 0
        self.most = 0
        self.killed: list[str] = []
        self.seconds_of: dict[str, float] = {}
        """Hosts that take another time than ``seconds``."""

    async def run_one(self, host: str) -> HostOutcome:
        began = time.monotonic()
        self.started.append(host)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds_of.get(host, self.seconds))
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # the kill takes a moment; the scheduler must wait for it
            self.killed.append(host)
            raise
        finally:
            self.running -= 1
            self.ended.append(host)
            self.windows[host] = (began, time.monotonic())
        state = self.states.get(host, "succeeded")
        return HostOutcome(host, state, 0 if state == "succeeded" else 1, time.monotonic() - began)


def names(count: int) -> list[str]:
    return [f"h{i:03d}" for i in range(count)]


async def test_every_host_runs_once_and_results_keep_the_hosts_order() -> None:
    fake = Hosts(seconds=0)
    hosts = names(30)
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=7)).run()
    assert [o.host for o in outcomes] == hosts
    assert sorted(fake.started) == hosts and all(o.state == "succeeded" for o in outcomes)


async def test_parallel_bounds_the_hosts_running_at_once() -> None:
    fake = Hosts(seconds=0.02)
    await Fleet(names(40), fake.run_one, FleetPolicy(parallel=5)).run()
    assert fake.most == 5


async def test_default_parallel_is_fifty() -> None:
    fake = Hosts(seconds=0.02)
    await Fleet(names(120), fake.run_one, FleetPolicy()).run()
    assert fake.most == 50


async def test_rolling_batches_start_after_the_previous_batch_ended_and_pause() -> None:
    fake = Hosts(seconds=0.03)
    hosts = names(10)
    began = time.monotonic()
    await Fleet(hosts, fake.run_one, FleetPolicy(parallel=50, batch="4", batch_pause_seconds=0.1)).run()
    batches = [hosts[0:4], hosts[4:8], hosts[8:10]]
    assert fake.started == hosts  # in order, a batch at a time
    for previous, following in zip(batches, batches[1:], strict=False):
        last_end = max(fake.windows[h][1] for h in previous)
        first_start = min(fake.windows[h][0] for h in following)
        assert first_start - last_end >= 0.1  # the pause, after the whole previous batch
    assert fake.most == 4
    assert time.monotonic() - began >= 0.2


async def test_a_percentage_batch_rounds_up() -> None:
    fake = Hosts(seconds=0.02)
    await Fleet(names(10), fake.run_one, FleetPolicy(batch="25%")).run()
    assert fake.most == 3  # 25 % of 10 hosts: batches of 3, 3, 3, 1


async def test_max_failures_stops_new_starts_and_skips_the_rest() -> None:
    hosts = names(10)
    fake = Hosts({hosts[0]: "failed", hosts[1]: "unreachable", hosts[2]: "timed_out"})
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=1, max_failures="2")).run()
    assert fake.started == hosts[:3]  # the third failure passes the limit of 2
    assert [o.state for o in outcomes] == ["failed", "unreachable", "timed_out"] + ["skipped"] * 7
    assert outcomes[3].message == "not started: more than 2 host(s) failed"


async def test_max_failures_as_a_percentage_rounds_down() -> None:
    hosts = names(20)
    fake = Hosts(dict.fromkeys(hosts, "failed"))
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=1, max_failures="10%")).run()
    assert len(fake.started) == 3  # 10 % of 20 = 2 allowed; the third failure stops the run
    assert sum(o.state == "skipped" for o in outcomes) == 17


async def test_running_hosts_finish_when_the_limit_is_reached() -> None:
    hosts = names(6)
    fake = Hosts({hosts[0]: "failed"}, seconds=0.02)
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=3, fail_fast=True)).run()
    assert fake.started == hosts[:3] and not fake.killed
    assert [o.state for o in outcomes] == ["failed", "succeeded", "succeeded", "skipped", "skipped", "skipped"]


async def test_fail_fast_stops_the_next_batch() -> None:
    hosts = names(9)
    fake = Hosts({hosts[1]: "unreachable"})
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(batch="3", fail_fast=True)).run()
    assert fake.started == hosts[:3]
    assert [o.state for o in outcomes][3:] == ["skipped"] * 6


async def test_stopped_and_skipped_hosts_do_not_count_as_failures() -> None:
    hosts = names(4)
    fake = Hosts({hosts[0]: "stopped"})
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=1, fail_fast=True)).run()
    assert len(fake.started) == 4 and outcomes[0].state == "stopped"


async def test_cancelling_the_run_kills_every_running_host_and_skips_the_rest() -> None:
    hosts = names(12)
    fake = Hosts(seconds=30)
    fleet = Fleet(hosts, fake.run_one, FleetPolicy(parallel=4))
    run = asyncio.create_task(fleet.run())
    while len(fake.started) < 4:
        await asyncio.sleep(0.005)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(fake.killed) == hosts[:4]  # each host's kill ended before the scheduler returned
    assert fake.running == 0
    results = fleet.results()
    assert [o.state for o in results] == ["stopped"] * 4 + ["skipped"] * 8
    assert results[5].message == "not started: the run was stopped"


async def test_cancelling_during_a_batch_pause_starts_nothing_more() -> None:
    hosts = names(6)
    fake = Hosts(seconds=0)
    fleet = Fleet(hosts, fake.run_one, FleetPolicy(batch="2", batch_pause_seconds=30))
    run = asyncio.create_task(fleet.run())
    while len(fake.ended) < 2:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert fake.started == hosts[:2]
    assert [o.state for o in fleet.results()] == ["succeeded"] * 2 + ["skipped"] * 4


async def test_the_deadline_stops_the_running_hosts_and_skips_the_rest() -> None:
    hosts = names(10)
    fake = Hosts(seconds=30)
    fake.seconds_of = {host: 0.01 for host in hosts[:2]}  # two quick hosts end before the deadline
    began = time.monotonic()
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(parallel=4, deadline_seconds=0.3)).run()
    assert 0.3 <= time.monotonic() - began < 5  # the run ends at its deadline, not after the 30 s hosts
    assert [o.state for o in outcomes] == ["succeeded"] * 2 + ["stopped"] * 4 + ["skipped"] * 4
    assert sorted(fake.killed) == hosts[2:6] and fake.running == 0  # each kill ended before the run did
    assert outcomes[2].message == "the run's deadline (0.3 s) passed while the script ran here"
    assert outcomes[6].message == "not started: the run's deadline (0.3 s) passed"


async def test_the_deadline_cuts_a_batch_pause_short_and_starts_no_other_batch() -> None:
    hosts = names(4)
    fake = Hosts(seconds=0)
    began = time.monotonic()
    outcomes = await Fleet(hosts, fake.run_one, FleetPolicy(batch="2", batch_pause_seconds=30, deadline_seconds=0.2)).run()
    assert time.monotonic() - began < 5 and fake.started == hosts[:2]
    assert [o.state for o in outcomes] == ["succeeded"] * 2 + ["skipped"] * 2


async def test_a_second_cancel_still_waits_for_the_kills() -> None:
    hosts = names(3)
    fake = Hosts(seconds=30)
    run = asyncio.create_task(Fleet(hosts, fake.run_one, FleetPolicy()).run())
    while len(fake.started) < 3:
        await asyncio.sleep(0.005)
    run.cancel()
    await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(fake.killed) == hosts and fake.running == 0


async def test_a_host_that_raises_is_failed_and_the_others_go_on() -> None:
    async def run_one(host: str) -> HostOutcome:
        if host == "bad":
            raise RuntimeError("boom")
        return HostOutcome(host, "succeeded", 0, 0.0)

    outcomes = await Fleet(["a", "bad", "c"], run_one, FleetPolicy(parallel=1)).run()
    assert [o.state for o in outcomes] == ["succeeded", "failed", "succeeded"]
    assert "boom" in outcomes[1].message


def test_a_host_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="each host once"):
        Fleet(["a", "a"], Hosts().run_one, FleetPolicy())


STATES = st.sampled_from(["succeeded", "succeeded", "failed", "unreachable", "timed_out"])


@settings(max_examples=60, deadline=None)
@given(
    states=st.lists(STATES, min_size=1, max_size=40),
    parallel=st.integers(1, 12),
    batch=st.one_of(st.none(), st.integers(1, 15).map(str), st.integers(1, 100).map(lambda p: f"{p}%")),
    max_failures=st.one_of(st.none(), st.integers(0, 5).map(str), st.integers(0, 60).map(lambda p: f"{p}%")),
)
def test_any_policy_bounds_parallelism_and_gives_each_host_exactly_one_outcome(
    states: list[HostState], parallel: int, batch: str | None, max_failures: str | None
) -> None:
    hosts = names(len(states))
    fake = Hosts(dict(zip(hosts, states, strict=True)), seconds=0)
    policy = FleetPolicy(parallel=parallel, batch=batch, max_failures=max_failures)
    outcomes = asyncio.run(Fleet(hosts, fake.run_one, policy).run())

    assert [o.host for o in outcomes] == hosts
    assert len(fake.started) == len(set(fake.started))  # no host ran twice
    assert fake.most <= min(parallel, policy.batch_size(len(hosts)))
    ran = {o.host for o in outcomes if o.state != "skipped"}
    assert ran == set(fake.started)
    assert fake.started == [h for h in hosts if h in ran]  # started in the hosts' order
    allowed = policy.failures_allowed(len(hosts))
    failures = sum(o.counts_as_failure for o in outcomes)
    if allowed is None or failures <= allowed:
        assert not ran ^ set(hosts)  # nobody skipped while under the limit
    else:
        # once past the limit nothing new started: at most the hosts already running went on failing
        assert failures <= allowed + min(parallel, policy.batch_size(len(hosts)))
