"""Where SMS keeps its state, read from the environment each time it is asked.

- ``SMS_HOME``: SMS's own folder (default ``~/.sms``): the embedded SQLite catalog and the
  embedded Prefect server's home live there.
- ``SMS_DATABASE_URL``: the catalog's SQLAlchemy URL (default: SQLite file ``$SMS_HOME/catalog.db``),
  e.g. ``mysql+pymysql://sms:secret@db.example:3306/sms`` for MariaDB.
- ``SMS_CA_BUNDLE``: the PEM file of CAs every TLS link verifies its peer against (unset: the
  system store; ``sms_plugin.tls``, docs/tls.md).
- ``SMS_DATABASE_TLS``: ``on`` / ``off``: the catalog's MariaDB connection requires TLS, the
  server's certificate verified against ``SMS_CA_BUNDLE`` (default: on unless the database is on
  loopback; docs/tls.md).
- ``SMS_WORK_POOL``: the Prefect work pool that runs scripts (default ``sms``).
- ``SMS_WORKER_TYPE``: the type of that pool when SMS creates it and of the worker ``sms up``
  starts: ``sms`` (default, in-process, docs/worker.md) or ``sms-process`` (a process per run).
- ``SMS_WORKER_STARTING``: in an ``sms`` worker, how many runs may be on their way to their
  script's start at once (default 32); the others wait their turn (docs/worker.md).
- ``SMS_SSH_HANDSHAKES``: how many SSH connections one process opens at once (TCP connect, key
  exchange, login; default 32); the others wait for a slot (docs/fleet.md).
- ``SMS_ELASTICSEARCH_URL``: where script output lines are shipped and read back (unset: no
  shipping, no spool; ``sms logs`` reads Prefect's run log). ``SMS_LOG_RETENTION_DAYS`` (default
  30): daily log indices older than this are deleted by ``sms log-shipper`` (docs/logs.md).
- ``SMS_KAFKA_BOOTSTRAP``: the Kafka brokers ``sms events`` publishes to (unset: no publisher in
  ``sms up``; catalog events still collect in the outbox, docs/events.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from sms_plugin.errors import SMSError


def env_number(name: str, default: float) -> float:
    """The number in environment variable ``name``, ``default`` when unset or empty."""
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SMSError(f"{name} must be a number, not {value!r}") from None


def sms_home() -> Path:
    """SMS's own folder, created on first use."""
    home = Path(os.environ.get("SMS_HOME") or Path.home() / ".sms").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url() -> str:
    """The catalog's database URL; an SQLite file under ``SMS_HOME`` unless ``SMS_DATABASE_URL`` is set."""
    return os.environ.get("SMS_DATABASE_URL") or f"sqlite:///{sms_home() / 'catalog.db'}"


def shown_database_url(url: str | None = None) -> str:
    """``url`` (default: the catalog's) fit to print: its password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    return make_url(url or database_url()).render_as_string(hide_password=True)


def database_tls(host: str | None) -> bool:
    """Whether the catalog's MariaDB connection requires TLS (``SMS_DATABASE_TLS``; default:
    on unless ``host`` is a loopback address or none, i.e. a local socket)."""
    from sms_plugin.listening import is_loopback

    value = (os.environ.get("SMS_DATABASE_TLS") or "").lower()
    if value in ("on", "1", "true"):
        return True
    if value in ("off", "0", "false"):
        return False
    if value:
        raise SMSError(f"SMS_DATABASE_TLS must be on or off, not {value!r}")
    return bool(host) and not is_loopback(host or "")


def work_pool_name() -> str:
    """The Prefect work pool whose workers run the scripts."""
    return os.environ.get("SMS_WORK_POOL") or "sms"


WORKER_TYPES = ("sms", "sms-process")
"""SMS's worker types: in-process (the default) and one process per run; both refuse job variables."""


def worker_type() -> str:
    """The work pool type SMS creates and ``sms up`` starts a worker of (``SMS_WORKER_TYPE``)."""
    chosen = os.environ.get("SMS_WORKER_TYPE") or "sms"
    if chosen not in WORKER_TYPES:
        raise SMSError(
            f"SMS_WORKER_TYPE={chosen!r}: use sms (in-process, the default) or sms-process (a process per run); "
            "Prefect's own process worker would run a command a caller puts in a flow run's job variables"
        )
    return chosen


def worker_starting() -> int:
    """How many runs an sms worker takes through claiming and starting at once (at least 1)."""
    return max(1, int(os.environ.get("SMS_WORKER_STARTING") or 32))


def ssh_handshakes() -> int:
    """How many SSH handshakes one process runs at once (at least 1)."""
    return max(1, int(os.environ.get("SMS_SSH_HANDSHAKES") or 32))


def worker_stop_seconds() -> float:
    """How long ``sms worker`` (and ``sms up``) waits, when stopped, for its runs to end Cancelled."""
    return float(os.environ.get("SMS_WORKER_STOP_SECONDS") or 30)


def elasticsearch_url() -> str | None:
    """The Elasticsearch that receives script output, or None when log shipping is off."""
    return os.environ.get("SMS_ELASTICSEARCH_URL") or None


def kafka_bootstrap() -> str | None:
    """The Kafka brokers events are published to (``SMS_KAFKA_BOOTSTRAP``), or None."""
    return os.environ.get("SMS_KAFKA_BOOTSTRAP") or None


def log_retention_days() -> int:
    """How many days of daily log indices ``sms log-shipper`` keeps."""
    return int(os.environ.get("SMS_LOG_RETENTION_DAYS") or 30)


def log_spool_dir() -> Path:
    """Where output lines wait for Elasticsearch: ``$SMS_HOME/log-spool``."""
    spool = sms_home() / "log-spool"
    spool.mkdir(exist_ok=True)
    return spool
