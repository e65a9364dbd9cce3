"""SMS's worker types: ``sms`` runs the flow runs of its work pool inside its own process, many at
once; ``sms-process`` runs each in a process of its own. Both refuse job variables (``guard``).

Importing this package registers the worker types with Prefect (it is a ``prefect.collections``
entry point of the distribution), so ``prefect work-pool create --type sms`` and
``prefect worker start --pool P --type sms`` know them. See docs/worker.md.
"""

from sms_plugin.worker.process import SMSProcessWorker
from sms_plugin.worker.worker import SMSWorker

__all__ = ["SMSProcessWorker", "SMSWorker"]
