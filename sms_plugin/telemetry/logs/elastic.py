"""The Elasticsearch side of log shipping: client, index template, retention, bulk sends.

Lines go to daily indices ``sms-logs-YYYY.MM.DD`` shaped by the composable index template
``sms-logs``. Retention is SMS's own (:func:`apply_retention` deletes whole daily indices older
than ``SMS_LOG_RETENTION_DAYS``), so it works on any distribution, including those without ILM.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit
from datetime import UTC, datetime, timedelta

from elasticsearch import ApiError, Elasticsearch, TransportError

from sms_plugin import tls
from sms_plugin.errors import SMSError
from sms_plugin.settings import current
from sms_plugin.telemetry.logs.documents import INDEX_PATTERN, INDEX_PREFIX, MAPPINGS

TEMPLATE = "sms-logs"
REFRESH_INTERVAL = "1s"
"""How soon an indexed line is searchable by itself (``sms logs --follow`` refreshes on each poll)."""
REQUEST_TIMEOUT = 30.0

log = logging.getLogger(__name__)


class ShippingError(SMSError):
    """Elasticsearch did not take a chunk now (down, slow, overloaded): try again later."""


def node_urls(url: str) -> list[str]:
    """The nodes of ``SMS_ELASTICSEARCH_URL``: one URL, or several separated by commas (a cluster)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def connect(url: str | None = None) -> Elasticsearch:
    """A client for ``url`` (default ``SMS_ELASTICSEARCH_URL``, one node or a comma-separated list of
    a cluster's nodes). Retries are the caller's job: a request that fails on a node marks that node
    dead in the client's pool for a while, so the caller's next try goes to another node."""
    url = url or current().logs.elasticsearch_url
    if not url:
        raise SMSError("Elasticsearch is not configured (set SMS_ELASTICSEARCH_URL)")
    nodes = node_urls(url)
    secure = {"ssl_context": tls.client_context()} if any(node.startswith("https:") for node in nodes) else {}
    return Elasticsearch(nodes, request_timeout=REQUEST_TIMEOUT, max_retries=0, retry_on_timeout=False, **secure)


def describe(error: Exception, doing: str) -> str:
    """What went wrong ``doing`` something with Elasticsearch: a refused certificate names the link."""
    refused = tls.refusal(f"Elasticsearch at {_shown(current().logs.elasticsearch_url)}", error)
    return str(refused) if refused else f"{doing}: {error}"


def ensure_template(client: Elasticsearch) -> None:
    """Create or update the ``sms-logs`` index template (idempotent)."""
    try:
        client.indices.put_index_template(
            name=TEMPLATE,
            index_patterns=[INDEX_PATTERN],
            priority=100,
            template={
                "settings": {
                    "number_of_shards": 1,
                    "auto_expand_replicas": "0-1",
                    "refresh_interval": REFRESH_INTERVAL,
                },
                "mappings": MAPPINGS,
            },
            meta={"description": "SMS script output, one document per line (docs/logs.md)"},
        )
    except (ApiError, TransportError) as error:
        raise ShippingError(describe(error, "cannot install the index template")) from error


def send(client: Elasticsearch, records: bytes) -> list[str]:
    """Index whole bulk records; returns the errors of documents Elasticsearch refuses for good.

    Raises :class:`ShippingError` when the chunk must be sent again later (Elasticsearch
    unreachable, or any document rejected with 429 or a 5xx status).
    """
    try:
        response = client.bulk(operations=records, filter_path="errors,items.*.status,items.*.error")
    except (ApiError, TransportError) as error:
        raise ShippingError(describe(error, "Elasticsearch did not take the logs")) from error
    if not response.get("errors"):
        return []
    refused = []
    for item in response["items"]:
        result = next(iter(item.values()))
        status = result.get("status", 200)
        if status == 429 or status >= 500:
            raise ShippingError(f"Elasticsearch is busy ({status}): {result.get('error')}")
        if status >= 300:
            refused.append(str(result.get("error")))
    return refused


def apply_retention(client: Elasticsearch, days: int, *, now: datetime | None = None) -> list[str]:
    """Delete daily log indices older than ``days`` days; returns their names."""
    cutoff = (now or datetime.now(UTC)).date() - timedelta(days=days)
    try:
        names = list(client.indices.get(index=INDEX_PATTERN, expand_wildcards="open,closed"))
    except (ApiError, TransportError) as error:
        raise ShippingError(describe(error, "cannot list log indices")) from error
    expired = []
    for name in names:
        try:
            day = datetime.strptime(name.removeprefix(INDEX_PREFIX), "%Y.%m.%d").date()
        except ValueError:
            continue
        if day < cutoff:
            expired.append(name)
    if expired:
        client.indices.delete(index=",".join(expired))
        log.info("deleted log indices older than %d days: %s", days, ", ".join(expired))
    return expired


def _shown(url: str | None) -> str:
    """``url`` (one node or several, comma-separated) without users and passwords (they may be in
    it): scheme, host and port of each node."""
    shown = []
    for node in node_urls(url or ""):
        parts = urlsplit(node)
        if parts.hostname:
            shown.append(f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}")
    return ",".join(shown) or "(unset)"
