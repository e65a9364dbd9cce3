"""Host kinds: the contract (``base.HostKind``), one module per kind, and the registry the faces use."""

from sms_plugin.host_kinds.base import HOST_NAME_PATTERN, LABEL_PATTERN, HostKind, checked_labels
from sms_plugin.host_kinds.checks import HostCheck
from sms_plugin.host_kinds.documents import DocumentWriter, StoredHost, document_data
from sms_plugin.host_kinds.local import LocalHost
from sms_plugin.host_kinds.registry import (
    KINDS,
    HostRequest,
    Kind,
    build,
    from_request,
    kind_named,
    kind_of,
    load_host,
    load_hosts,
    public_view,
    request_fields,
    stored_hosts,
)
from sms_plugin.host_kinds.ssh import SSHHost
from sms_plugin.host_kinds.windows import WindowsHost

__all__ = [
    "HOST_NAME_PATTERN", "KINDS", "LABEL_PATTERN", "DocumentWriter", "HostCheck", "HostKind", "HostRequest", "Kind",
    "LocalHost", "SSHHost", "StoredHost", "WindowsHost", "build", "checked_labels", "document_data", "from_request", "kind_named", "kind_of", "load_host", "load_hosts",
    "public_view", "request_fields", "stored_hosts",
]
