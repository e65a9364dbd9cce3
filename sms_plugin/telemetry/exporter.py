"""``sms exporter``: serves SMS's Prometheus metrics, kept current from Prefect's event stream, or
from Kafka's topic ``sms.runs`` with ``SMS_EXPORTER_SOURCE=kafka`` (the same counters either way;
``sms_plugin.telemetry.kafka_source``).

At start and after every lost subscription the run metrics are rebuilt from Prefect's API
(:func:`~sms_plugin.telemetry.sources.rebuild`) into a fresh :class:`RunMetrics`, which then
replaces the served one in one step; events are counted once (ids, see ``metrics``), so the
stream's replay after a (re)connect adds nothing twice. Hosts are checked every
``probe_seconds`` (``sms_plugin.hosts.check``) **without logging in** (the SSH handshake and host
key; a TCP connect to WinRM); with ``login_check`` a host check logs in, and after a failed one the
host is not logged into again for ``LOGIN_RETRY_SECONDS`` (it reads down meanwhile), so a wrong
password costs the server one failed login an hour, never one a minute.

Settings (the tree's ``exporter`` group, sms_plugin.settings; ``sms exporter`` options override):

- ``SMS_EXPORTER_ADDRESS`` / ``SMS_EXPORTER_PORT``: where ``/metrics`` is served (127.0.0.1:9478).
- ``SMS_EXPORTER_TLS_CERT`` / ``SMS_EXPORTER_TLS_KEY``: PEM certificate and key: serve HTTPS
  (Prometheus scrapes with ``scheme: https`` and the CA, docs/tls.md).
- ``SMS_EXPORTER_HISTORY_HOURS``: how far back a rebuild reads (168, Prefect's default event retention).
- ``SMS_EXPORTER_PROBE_SECONDS``: host check period (60).
- ``SMS_EXPORTER_PARALLEL_CHECKS``: host checks at a time (32); each host's ``sms_host_up`` is set
  when its own check ends, hosts without one yet are checked first.
- ``SMS_EXPORTER_LOGIN_CHECK``: ``1`` to log in at each check (off: reachability and host key only).
- ``SMS_EXPORTER_SOURCE``: where run events come from: ``prefect`` (its event stream, the default)
  or ``kafka`` (topic ``sms.runs`` on the brokers of ``SMS_KAFKA_BOOTSTRAP``, as ``sms events``
  publishes it; the window is replayed from Kafka at each start instead of rebuilt from Prefect).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import ObjectNotFound
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.registry import Collector

from sms_plugin import hosts, run_events
from sms_plugin.errors import SMSError
from sms_plugin.settings import ExporterSettings, current
from sms_plugin.telemetry import sources
from sms_plugin.telemetry.kafka_source import RunEventConsumer, fact_of
from sms_plugin.telemetry.metrics_endpoint import MetricsEndpoint
from sms_plugin.telemetry.metrics import RunMetrics, ServiceMetrics
from sms_plugin.telemetry.store_sweeps import sweep_store

log = logging.getLogger("sms.exporter")

_RETRY_SECONDS = 2.0
_CATCH_UP_SECONDS = (15.0, 45.0)
"""Pauses before the first re-reads of the span around a subscription (see ``Exporter._catch_up``)."""
_SWEEP_SECONDS = 30.0
"""Then, how often what ended since the last re-read is read again (``telemetry.store_sweeps``)."""
_CATCH_UP_MARGIN = timedelta(minutes=2)
"""How far before the subscription, or the last re-read, a re-read starts."""
_CHECK_TIMEOUT_SECONDS = 30.0
LOGIN_RETRY_SECONDS = 3600.0
"""After a failed login check, how long the exporter leaves the host's credentials alone."""
SOURCES = ("prefect", "kafka")
"""Where run events may come from (``SMS_EXPORTER_SOURCE``)."""


def endpoint(settings: ExporterSettings) -> MetricsEndpoint:
    """The exporter's ``/metrics`` endpoint."""
    return MetricsEndpoint("the exporter", "SMS_EXPORTER_", settings.address, settings.port, settings.tls_cert,
                           settings.tls_key, settings.allow_plain_http, options=True)


def exporter_url(settings: ExporterSettings | None = None) -> str:
    """Where the exporter serves its metrics."""
    return endpoint(settings or current().exporter).url


class _Served(Collector):
    """What ``/metrics`` shows: the current run metrics (swapped on rebuild) and the service metrics."""

    def __init__(self, service: ServiceMetrics, runs: RunMetrics) -> None:
        self.service = service
        self.runs = runs

    def collect(self) -> Iterable:
        yield from self.runs.registry.collect()
        yield from self.service.registry.collect()


class Exporter:
    def __init__(self, settings: ExporterSettings, kafka_bootstrap: str | None = None) -> None:
        """``kafka_bootstrap``: the brokers ``sms events`` publishes to, needed when the source is Kafka."""
        if settings.source == "kafka" and not kafka_bootstrap:
            raise SMSError("SMS_EXPORTER_SOURCE=kafka needs SMS_KAFKA_BOOTSTRAP (the brokers sms events publishes to)")
        self.settings = settings
        self.kafka_bootstrap = kafka_bootstrap
        self.service = ServiceMetrics()
        self.served = _Served(self.service, RunMetrics())
        self._failed_logins: dict[str, float] = {}
        """Host name → when (monotonic) its last login check failed."""

    def listen(self) -> int:
        """Starts serving ``/metrics`` (a background thread); returns the port."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.served)
        return endpoint(self.settings).serve(registry)

    async def run(self) -> None:
        """Follows the run events and probes the hosts until cancelled."""
        self._thread_per_check()
        probing = asyncio.create_task(self._probe_forever())
        try:
            await self.follow()
        finally:
            probing.cancel()

    def _thread_per_check(self) -> None:
        """Gives the loop's default thread pool (``asyncio.to_thread``, where an SSH check waits for its
        handshake) a thread per parallel check and 4 more: asyncio's own has min(32, CPUs + 4), and a
        check waiting there for a thread would spend its time-out before it starts."""
        pool = ThreadPoolExecutor(self.settings.parallel_checks + 4, thread_name_prefix="sms-exporter")
        asyncio.get_running_loop().set_default_executor(pool)

    async def follow(self) -> None:
        """Counts run events from the configured source until cancelled; a lost subscription (or a
        Kafka consumer that failed) is started again, with fresh metrics."""
        once = self._follow_kafka if self.settings.source == "kafka" else self._follow
        while True:
            try:
                await once()
                log.warning("the event stream was closed; re-subscribing")
            except Exception as error:  # noqa: BLE001 - whatever broke the subscription, subscribe again
                log.warning("event stream lost (%s: %s); re-subscribing", type(error).__name__, error)
            self.service.connected.set(0)
            await asyncio.sleep(_RETRY_SECONDS)
            self.service.reconnects.inc()

    def _window(self) -> RunMetrics:
        return RunMetrics(since=datetime.now(UTC) - timedelta(hours=self.settings.history_hours))

    async def _follow_kafka(self) -> None:
        """Replays ``sms.runs`` from the window's start into fresh metrics, then follows it."""
        fresh = self._window()
        self.served.runs = fresh
        self.service.rebuilds.inc()
        async with get_client() as client:  # scripts whose newest success is older than the window
            await sources.older_successes(fresh, client)
        assert self.kafka_bootstrap is not None, "checked when the exporter was made"
        consumer = RunEventConsumer(self.kafka_bootstrap, fresh.since or datetime.now(UTC))
        log.info("counting run events from Kafka (%s)", self.kafka_bootstrap)
        try:
            while True:
                events = await consumer.next_events()
                self.service.connected.set(int(consumer.connected))
                for event in events:
                    try:
                        fact = fact_of(event)
                    except (ValueError, KeyError, TypeError) as error:  # malformed: skip it, keep following
                        log.warning("skipped event %s: %s: %s", event.get("id"), type(error).__name__, error)
                        continue
                    if fact is not None and fresh.apply(fact):
                        self.service.counted(fact.occurred, datetime.now(UTC))
        finally:
            await consumer.aclose()

    async def _follow(self) -> None:
        """One subscription: subscribe, rebuild from the API, then count live events."""
        event_filter = EventFilter(event=EventNameFilter(prefix=[sources.RUN_STATE_PREFIX, run_events.PREFIX]))
        async with get_client() as client, get_events_subscriber(filter=event_filter) as subscriber:
            subscribed = datetime.now(UTC)
            fresh = self._window()
            await sources.rebuild(fresh, client)
            self.served.runs = fresh
            self.service.rebuilds.inc()
            self.service.connected.set(1)
            log.info("run metrics rebuilt from Prefect's API; following its event stream")
            catching_up = asyncio.create_task(self._catch_up(client, fresh, subscribed))
            try:
                async for event in subscriber:
                    try:
                        counted = await self._count(client, fresh, event)
                    except (ValueError, KeyError, TypeError) as error:  # a malformed event: skip it, keep following
                        log.warning("skipped event %s (%s): %s: %s", event.id, event.event, type(error).__name__, error)
                        continue
                    if counted:
                        self.service.counted(event.occurred, datetime.now(UTC))
            finally:
                catching_up.cancel()

    async def _catch_up(self, client: PrefectClient, metrics: RunMetrics, subscribed: datetime) -> None:
        """Reads the span around the subscription again, :data:`_CATCH_UP_SECONDS` later: Prefect
        stores an event some seconds after it happened (more under load), so an event that happened
        just before the subscription opened was neither in the store the rebuild read nor in the
        stream. Then every :data:`_SWEEP_SECONDS` what ended since the last pass: the live stream
        drops events for a slow reader (``telemetry.store_sweeps``). What was counted already is
        skipped by its id."""
        await sweep_store(
            lambda since: sources.recount(metrics, client, since),
            max(metrics.since or subscribed, subscribed - _CATCH_UP_MARGIN),
            first_pauses=_CATCH_UP_SECONDS, every=_SWEEP_SECONDS, margin=_CATCH_UP_MARGIN,
        )

    async def _count(self, client: PrefectClient, metrics: RunMetrics, event: Event) -> bool:
        if not sources.is_run_script_state(event):
            return sources.apply_sms_event(metrics, event)
        try:
            flow_run = await client.read_flow_run(sources.run_id_of(event))
        except ObjectNotFound:  # deleted meanwhile
            return False
        return metrics.apply_state(sources.state_from_event(event, flow_run))

    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.probe()
            except Exception as error:  # noqa: BLE001 - keep probing; the next round may work
                log.warning("host probe failed: %s: %s", type(error).__name__, error)
            await asyncio.sleep(self.settings.probe_seconds)

    async def probe(self) -> None:
        """Reads the scripts' schedules, then checks every host (``sms_host_up``), ``parallel_checks``
        at a time: a host's gauge is set as soon as its own check ends (a check that outlasts
        :data:`_CHECK_TIMEOUT_SECONDS` reads down then), hosts without a gauge yet are checked first,
        and removed hosts lose theirs when the round starts."""
        async with get_client() as client:  # the schedules first: one quick call, while host checks may be slow
            self.service.set_labelled(self.service.expected_interval, await sources.expected_intervals(client))
        names = [host.name for host in await hosts.listing()]
        self.service.keep_only(self.service.host_up, names)
        queue = iter(check_order(names, self.service.labels_of(self.service.host_up)))
        await asyncio.gather(*(self._check_each(queue) for _ in range(self.settings.parallel_checks)))

    async def _check_each(self, queue: Iterator[str]) -> None:
        """Checks the hosts ``queue`` hands out (shared by the round's checkers) one after another,
        setting each one's ``sms_host_up`` when its check ends."""
        for name in queue:
            self.service.set_one(self.service.host_up, name, await self._up(name))

    async def _up(self, name: str) -> float:
        """1.0 if host ``name`` is up now, else 0.0 (a failed, broken or timed-out check)."""
        if name in self._failed_logins and time.monotonic() - self._failed_logins[name] < LOGIN_RETRY_SECONDS:
            return 0.0  # its last login check failed: no second try within the hour
        login = self.settings.login_check
        try:
            result = await asyncio.wait_for(hosts.check(name, login=login), _CHECK_TIMEOUT_SECONDS)
        except (SMSError, TimeoutError):
            return 0.0
        except Exception as error:  # noqa: BLE001 - one host's broken check must not hide the others
            log.warning("host %s: check failed: %s: %s", name, type(error).__name__, error)
            return 0.0
        if login and result.reachable and result.host_key in ("match", "not checked") and not result.authenticated:
            self._failed_logins[name] = time.monotonic()
            log.warning("host %s: the login check failed; no new login for %g s", name, LOGIN_RETRY_SECONDS)
        else:
            self._failed_logins.pop(name, None)
        return float(result.up)


def check_order(names: Iterable[str], shown: Collection[str]) -> list[str]:
    """``names`` in the order a round checks them: those not ``shown`` yet (new hosts) first, each
    part in its own order."""
    return sorted(names, key=lambda name: name in shown)


def serve(settings: ExporterSettings, kafka_bootstrap: str | None = None) -> None:
    """Runs the exporter in the foreground until interrupted."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SMSError("PREFECT_API_URL is not set; point it at the Prefect API the exporter should follow")
    disable_created_metrics()  # no *_created series: they change at every restart and say nothing here
    exporter = Exporter(settings, kafka_bootstrap)
    port = exporter.listen()
    following = f"Kafka {kafka_bootstrap}" if settings.source == "kafka" else PREFECT_API_URL.value()
    print(f"SMS exporter: metrics on {replace(endpoint(settings), port=port).url}, following {following}", flush=True)
    asyncio.run(exporter.run())
