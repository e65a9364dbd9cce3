"""The script catalog: scripts, immutable versions, run records and the audit log, in SQLite or MariaDB.

Rows in, rows out; nothing here knows of transports, Prefect or HTTP::

    catalog = Catalog("sqlite:///catalog.db")   # default: settings.database_url()
    catalog.upgrade()                             # Alembic "upgrade head"
    spec = ScriptSpec(name="hello", interpreter="bash", host="web-1")
    with catalog.session() as s:                  # commits on success, rolls back on error
        add_script(s, spec, content="echo hello", author="alice")
    script = await catalog.aio.run(get_script, "hello")  # in async code: off the event loop
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sms_plugin.lazy import lazy_attributes

if TYPE_CHECKING:
    from sms_plugin.catalog.aio import AsyncCatalog
    from sms_plugin.catalog.database import Catalog
    from sms_plugin.catalog.models import AuditEvent, HostExecutionRecord, RunRecord, Script, ScriptVersion
    from sms_plugin.catalog.repository import (
        add_script,
        add_version,
        audit,
        get_run,
        get_script,
        get_version,
        host_executions,
        list_audit,
        list_runs,
        list_scripts,
        list_versions,
        record_host_execution,
        record_run,
        remove_script,
        touch_heartbeats,
        update_host_execution,
        update_run,
        update_script,
    )
    from sms_plugin.catalog.spec import ScheduleSpec, ScriptSpec

__all__ = [
    "AsyncCatalog",
    "AuditEvent",
    "Catalog",
    "HostExecutionRecord",
    "RunRecord",
    "ScheduleSpec",
    "Script",
    "ScriptSpec",
    "ScriptVersion",
    "add_script",
    "add_version",
    "audit",
    "get_run",
    "get_script",
    "get_version",
    "host_executions",
    "list_audit",
    "list_runs",
    "list_scripts",
    "list_versions",
    "record_host_execution",
    "record_run",
    "remove_script",
    "touch_heartbeats",
    "update_host_execution",
    "update_run",
    "update_script",
]

# Each name is imported from its module on first use: ``ScriptSpec`` (pydantic) comes without
# SQLAlchemy and Alembic, which the ``sms`` command loads only for the verbs that need them.
__getattr__ = lazy_attributes(__name__, {
    "aio": ["AsyncCatalog"],
    "database": ["Catalog"],
    "models": ["AuditEvent", "HostExecutionRecord", "RunRecord", "Script", "ScriptVersion"],
    "repository": [name for name in __all__ if name[0].islower()],
    "spec": ["ScheduleSpec", "ScriptSpec"],
})
