"""How a host execution is named on its host.

The run id marks everything a run leaves on a host: the ``SMS_RUN_ID`` of its processes, its state
file and its upload folder (``~/.sms/run/<id>``). A run on one host uses the flow run's id, as it
always has; in a run on several hosts each execution gets ``<host>.<flow run id>``, so that two host
blocks on the same machine (or one test bed) never share a marker, and no host's marker is a prefix
of another's (markers are found with a fixed-string search).
"""

from __future__ import annotations


def execution_id(run_id: str, host: str, hosts_in_run: int) -> str:
    """The id that marks ``host``'s execution of run ``run_id`` on the host.

    >>> execution_id("6f1c", "web-01", 1), execution_id("6f1c", "web-01", 3)
    ('6f1c', 'web-01.6f1c')
    """
    return run_id if hosts_in_run == 1 else f"{host}.{run_id}"
