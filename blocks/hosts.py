"""The host blocks Prefect registers (``prefect block register -m blocks.hosts``): the host kinds
of ``sms_plugin.host_kinds``, re-exported. They appear in the Prefect UI's block catalog.

The kinds themselves, their contract and the registry the faces use live in
``sms_plugin.host_kinds`` (docs/hosts.md): this package depends on ``sms_plugin``, never the reverse.
"""

from sms_plugin.host_kinds import LocalHost, SSHHost, WindowsHost, load_host

__all__ = ["LocalHost", "SSHHost", "WindowsHost", "load_host"]
