"""SMS, the Script Management System on Prefect: the plugin library (catalog, transports,
deployment sync, services, SDK and CLI). Start with :class:`SMSClient`::

    from sms_plugin import SMSClient
"""

from typing import Any

__all__ = ["AsyncSMSClient", "SMSClient"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the SDK pulls in Prefect and the flow, which themselves import
    # parts of this package.
    if name in __all__:
        from sms_plugin import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'sms_plugin' has no attribute {name!r}")
