"""SMS's Prefect block types. Importing this package registers them with Prefect
(it is the ``prefect.collections`` entry point of the distribution)."""

from blocks.hosts import LocalHost, SSHHost, WindowsHost, load_host

__all__ = ["LocalHost", "SSHHost", "WindowsHost", "load_host"]
