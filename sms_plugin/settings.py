"""SMS's settings: one tree of groups (pydantic-settings), one group per concern, read from the
environment once at the edge (the ``sms`` command, ``sms up``, a worker, the gateway, the exporter,
the event publisher) and passed in; code below the edge asks :func:`current`.

    tree = settings.load()                    # every group, validated; SMSError naming a bad value
    with settings.installed(tree):            # what current() answers until the block ends
        ...
    settings.current().worker.stop_seconds    # outside an edge (a flow process, a test): the environment's now

Each field keeps its documented variable name (``validation_alias``); the README's configuration
table names every one (tests/unit/test_settings_documented.py). The gateway's group
(``SMS_OIDC_*``, ``SMS_GATEWAY_*``, sms_plugin.gateway.config) is validated only where a gateway
starts (:meth:`Settings.gateway`). Importing this module imports pydantic, nothing heavier.

How to add a setting: docs/decisions.md ("Adding a setting").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_plugin.errors import SMSError

if TYPE_CHECKING:
    from sms_plugin.gateway.config import GatewaySettings

WORKER_TYPES = ("sms", "sms-process")
"""SMS's worker types: in-process (the default) and one process per run; both refuse job variables."""


FIELD_NAMES_UNREAD = "SMS_NOT_A_SETTING_"
"""With ``populate_by_name`` (fields built by name in tests), pydantic-settings also reads a variable
named after the field itself, so ``HOME`` would become ``catalog.home`` and ``PORT`` a port. This
prefix, which no documented variable has, is put before those names only: each field is read from
its own ``SMS_*`` variable and nothing else."""


class Group(BaseSettings):
    """One concern's settings, each field read from its own ``SMS_*`` variable (an empty one counts
    as unset); built from keyword arguments by field name in tests."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True,
                                      env_prefix=FIELD_NAMES_UNREAD)


class CatalogSettings(Group):
    home: Path = Field(Path("~/.sms"), validation_alias="SMS_HOME",
                       description="SMS's folder: embedded catalog, embedded Prefect home, logs of `sms up`")
    database: str | None = Field(None, validation_alias="SMS_DATABASE_URL", repr=False,
                                 description="the catalog's SQLAlchemy URL (default: SQLite under SMS_HOME)")
    retry_seconds: float = Field(60, ge=0, validation_alias="SMS_CATALOG_RETRY_SECONDS",
                                 description="how long a transaction the database aborted is run again")
    tls: bool | None = Field(None, validation_alias="SMS_DATABASE_TLS")
    """MariaDB over verified TLS (``on``/``off``); unset: on unless the database is on loopback."""

    def folder(self) -> Path:
        """SMS's own folder, created on first use."""
        home = self.home.expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return home

    def database_url(self) -> str:
        """The catalog's URL: ``SMS_DATABASE_URL``, else the SQLite file ``$SMS_HOME/catalog.db``."""
        return self.database or f"sqlite:///{self.folder() / 'catalog.db'}"


class WorkerSettings(Group):
    pool: str = Field("sms", min_length=1, validation_alias="SMS_WORK_POOL")
    type: Literal["sms", "sms-process"] = Field("sms", validation_alias="SMS_WORKER_TYPE")
    starting: int = Field(32, ge=1, validation_alias="SMS_WORKER_STARTING")
    stop_seconds: float = Field(30, gt=0, validation_alias="SMS_WORKER_STOP_SECONDS")
    heartbeat_seconds: float = Field(10, gt=0, validation_alias="SMS_HEARTBEAT_SECONDS")
    lost_run_seconds: float = Field(300, gt=0, validation_alias="SMS_LOST_RUN_SECONDS")
    """How long a run must look lost (Pending with a silent worker, Running without a live run
    record) before the reaper crashes it (:mod:`sms_plugin.lost_runs`)."""


class SSHSettings(Group):
    handshakes: int = Field(32, ge=1, validation_alias="SMS_SSH_HANDSHAKES")


class FleetSettings(Group):
    task_runs: int = Field(50, ge=0, validation_alias="SMS_FLEET_TASK_RUNS")
    """The most hosts a fleet run shows as task runs of its own in the Prefect UI (0: never)."""


class LogSettings(Group):
    elasticsearch_url: str | None = Field(None, validation_alias="SMS_ELASTICSEARCH_URL", repr=False)
    retention_days: int = Field(30, ge=1, validation_alias="SMS_LOG_RETENTION_DAYS")


class TLSSettings(Group):
    ca_bundle: str | None = Field(None, validation_alias="SMS_CA_BUNDLE")
    """The PEM file of the CAs every TLS link verifies its peer against (unset: the system store)."""


class EventSettings(Group):
    kafka_bootstrap: str | None = Field(None, validation_alias="SMS_KAFKA_BOOTSTRAP")
    security_protocol: str | None = Field(None, validation_alias="SMS_KAFKA_SECURITY_PROTOCOL")
    """Kafka's ``security.protocol``; unset: PLAINTEXT on loopback, else SSL (SASL_SSL with a user)."""
    sasl_username: str | None = Field(None, validation_alias="SMS_KAFKA_SASL_USERNAME")
    sasl_password: SecretStr | None = Field(None, validation_alias="SMS_KAFKA_SASL_PASSWORD")
    sasl_mechanism: str = Field("SCRAM-SHA-512", validation_alias="SMS_KAFKA_SASL_MECHANISM")
    outbox_limit: int = Field(100_000, ge=1, validation_alias="SMS_EVENTS_OUTBOX_LIMIT")
    send_timeout_seconds: float = Field(30, gt=0, validation_alias="SMS_EVENTS_SEND_TIMEOUT_SECONDS")
    metrics_port: int = Field(9479, ge=0, le=65535, validation_alias="SMS_EVENTS_METRICS_PORT")
    metrics_address: str = Field("127.0.0.1", validation_alias="SMS_EVENTS_METRICS_ADDRESS")
    metrics_tls_cert: Path | None = Field(None, validation_alias="SMS_EVENTS_METRICS_TLS_CERT")
    """PEM certificate (chain): the publisher's ``/metrics`` serves HTTPS; with ``metrics_tls_key``."""
    metrics_tls_key: Path | None = Field(None, validation_alias="SMS_EVENTS_METRICS_TLS_KEY")
    metrics_allow_plain_http: bool = Field(False, validation_alias="SMS_EVENTS_METRICS_ALLOW_PLAIN_HTTP")
    """Serve ``/metrics`` in plain HTTP on a non-loopback address."""


class ExporterSettings(Group):
    address: str = Field("127.0.0.1", validation_alias="SMS_EXPORTER_ADDRESS")
    port: int = Field(9478, ge=0, le=65535, validation_alias="SMS_EXPORTER_PORT")
    history_hours: float = Field(168, gt=0, validation_alias="SMS_EXPORTER_HISTORY_HOURS")
    probe_seconds: float = Field(60, gt=0, validation_alias="SMS_EXPORTER_PROBE_SECONDS")
    parallel_checks: int = Field(32, ge=1, le=256, validation_alias="SMS_EXPORTER_PARALLEL_CHECKS")
    """Host checks at a time (SSH checks beyond ``SMS_SSH_HANDSHAKES`` wait for a handshake slot)."""
    login_check: bool = Field(False, validation_alias="SMS_EXPORTER_LOGIN_CHECK")
    """Log in at each host check (off: the probe never presents credentials)."""
    allow_plain_http: bool = Field(False, validation_alias="SMS_EXPORTER_ALLOW_PLAIN_HTTP")
    """Serve plain HTTP on a non-loopback address (metrics name scripts and hosts)."""
    tls_cert: Path | None = Field(None, validation_alias="SMS_EXPORTER_TLS_CERT")
    """PEM certificate (chain) to serve HTTPS with; with ``tls_key``."""
    tls_key: Path | None = Field(None, validation_alias="SMS_EXPORTER_TLS_KEY")
    source: Literal["prefect", "kafka"] = Field("prefect", validation_alias="SMS_EXPORTER_SOURCE")
    """Where run events come from: Prefect's event stream, or the ``sms.runs`` topic of ``SMS_KAFKA_BOOTSTRAP``."""


class ScheduleSettings(Group):
    min_seconds: int = Field(300, ge=60, validation_alias="SMS_SCHEDULE_MIN_SECONDS")
    """cron cannot fire more often than once a minute."""


class ConsoleSettings(Group):
    """What the gateway serves besides its API (read without the OIDC settings it also needs)."""

    dist: Path | None = Field(None, validation_alias="SMS_CONSOLE_DIR")
    webhook_key: SecretStr | None = Field(None, validation_alias="SMS_WEBHOOK_KEY")


CLI_OPTION_VARIABLES = ("SMS_LOCAL", "SMS_GATEWAY_URL")
"""Variables the ``sms`` command's own options read (``--local``, ``sms login --gateway``)."""


class Settings(BaseModel):
    """The whole tree."""

    model_config = ConfigDict(frozen=True)

    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    exporter: ExporterSettings = Field(default_factory=ExporterSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    def gateway(self) -> GatewaySettings:
        """The gateway's group, validated now (it needs ``SMS_OIDC_ISSUER``)."""
        from sms_plugin.gateway.config import load_settings

        return load_settings()

    @staticmethod
    def gateway_configured() -> bool:
        """A gateway is configured (``SMS_OIDC_ISSUER`` set): ``sms up`` starts one."""
        return bool(os.environ.get("SMS_OIDC_ISSUER"))


GROUPS: tuple[type[Group], ...] = (
    CatalogSettings, WorkerSettings, SSHSettings, TLSSettings, FleetSettings,
    LogSettings, EventSettings, ExporterSettings, ScheduleSettings, ConsoleSettings,
)


def variable(error: ValidationError) -> str:
    """The first failing value of ``error`` as ``SMS_NAME: reason``."""
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def load() -> Settings:
    """Every group from the environment now; SMSError naming the first bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise SMSError(f"bad setting {variable(error)}") from None


_installed: Settings | None = None


@contextmanager
def installed(tree: Settings) -> Iterator[Settings]:
    """``current()`` answers ``tree`` until the block ends (an edge's read, passed to the code below it)."""
    global _installed
    before, _installed = _installed, tree
    try:
        yield tree
    finally:
        _installed = before


_read: tuple[tuple[tuple[str, str], ...], Settings] | None = None
"""The last tree read outside an edge, with the ``SMS_*`` variables it was read from."""


def current() -> Settings:
    """The tree the edge installed, else the environment's now: read again only when an ``SMS_*``
    variable changed (a worker started by Prefect's own CLI has no edge; a read costs milliseconds)."""
    global _read
    if _installed:
        return _installed
    variables = tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("SMS_")))
    if _read is None or _read[0] != variables:
        _read = (variables, load())
    return _read[1]


def sms_home() -> Path:
    """SMS's own folder (``SMS_HOME``), created on first use."""
    return current().catalog.folder()


def database_url() -> str:
    """The catalog's database URL (``SMS_DATABASE_URL``, else an SQLite file under ``SMS_HOME``)."""
    return current().catalog.database_url()


def shown_database_url(url: str | None = None) -> str:
    """``url`` (default: the catalog's) fit to print: its password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    return make_url(url or database_url()).render_as_string(hide_password=True)


def database_tls(host: str | None) -> bool:
    """Whether the catalog's MariaDB connection requires TLS (``SMS_DATABASE_TLS``; default: on
    unless ``host`` is a loopback address or none, i.e. a local socket)."""
    from sms_plugin.listening import is_loopback

    chosen = current().catalog.tls
    return chosen if chosen is not None else bool(host) and not is_loopback(host or "")


def log_spool_dir() -> Path:
    """Where output lines wait for Elasticsearch: ``$SMS_HOME/log-spool``."""
    spool = sms_home() / "log-spool"
    spool.mkdir(exist_ok=True)
    return spool
