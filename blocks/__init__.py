"""SMS's Prefect block types. Importing this package registers them with Prefect
(it is the ``prefect.collections`` entry point of the distribution)."""

from blocks.hosts import HOST_BLOCK_TYPES, HostBlock, LocalHost, SSHHost, load_host

__all__ = ["HOST_BLOCK_TYPES", "HostBlock", "LocalHost", "SSHHost", "load_host"]
