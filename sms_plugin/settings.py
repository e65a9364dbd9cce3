"""Where SMS keeps its state, read from the environment each time it is asked.

- ``SMS_HOME``: SMS's own folder (default ``~/.sms``): the embedded SQLite catalog and the
  embedded Prefect server's home live there.
- ``SMS_DATABASE_URL``: the catalog's SQLAlchemy URL (default: SQLite file ``$SMS_HOME/catalog.db``),
  e.g. ``mysql+pymysql://sms:secret@db.example:3306/sms`` for MariaDB.
- ``SMS_WORK_POOL``: the Prefect work pool that runs scripts (default ``sms``).
- ``SMS_WORKER_TYPE``: the type of that pool when SMS creates it and of the worker ``sms up``
  starts: ``process`` (default, a process per run) or ``sms`` (in-process, docs/worker.md).
"""

from __future__ import annotations

import os
from pathlib import Path


def sms_home() -> Path:
    """SMS's own folder, created on first use."""
    home = Path(os.environ.get("SMS_HOME") or Path.home() / ".sms").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url() -> str:
    """The catalog's database URL; an SQLite file under ``SMS_HOME`` unless ``SMS_DATABASE_URL`` is set."""
    return os.environ.get("SMS_DATABASE_URL") or f"sqlite:///{sms_home() / 'catalog.db'}"


def work_pool_name() -> str:
    """The Prefect work pool whose workers run the scripts."""
    return os.environ.get("SMS_WORK_POOL") or "sms"


def worker_type() -> str:
    """The work pool type SMS creates and ``sms up`` starts a worker of: ``process`` or ``sms``."""
    return os.environ.get("SMS_WORKER_TYPE") or "process"
