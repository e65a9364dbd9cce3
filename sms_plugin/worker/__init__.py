"""The ``sms`` worker type: runs the flow runs of its work pool inside its own process, many at once.

Importing this package registers the worker type with Prefect (it is a ``prefect.collections``
entry point of the distribution), so ``prefect work-pool create --type sms`` and
``prefect worker start --pool P --type sms`` know it. See docs/worker.md.
"""

from sms_plugin.worker.worker import SMSWorker

__all__ = ["SMSWorker"]
