"""Script output in Elasticsearch: every line one document, spooled locally, delivered exactly once.

- :mod:`documents`: the document of a line (ECS names), its index and id, the mappings;
- :mod:`spool`: the on-disk spool under ``$SMS_HOME/log-spool``;
- :mod:`elastic`: client, index template, retention, bulk sends;
- :mod:`delivery`: who sends the spool and when (the flow process, ``sms log-shipper``);
- :mod:`shipping`: the logging handler the run-script flow is wired to;
- :mod:`reader`: reading lines back (one run, live tail, search across runs).

See docs/logs.md.
"""

from sms_plugin.telemetry.logs.documents import OutputSource
from sms_plugin.telemetry.logs.reader import LogEntry, run_output, search
from sms_plugin.telemetry.logs.shipping import OUTPUT, shipping

__all__ = ["OUTPUT", "LogEntry", "OutputSource", "run_output", "search", "shipping"]
