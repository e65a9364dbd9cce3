"""One Elasticsearch document per output line: its index, its id and its body (ECS field names).

A line becomes a bulk-API record (action line + source line) the moment it is spooled, so that
delivery only moves bytes. Ids are ``{run_id}:{attempt}:{line}`` (``{run_id}:{attempt}:{host}:{line}``
for a host of a fleet run): sending a record twice overwrites the same document, which makes
delivery exactly-once.

Example::

    source = OutputSource(run_id="6f1c…", attempt=1, script="backup", version=3, host="web-01")
    bulk_records(source, "stdout", 1, 1767225600.0, ["hello"])
    # '{"index":{"_index":"sms-logs-2026.01.01","_id":"6f1c…:1:1"}}\\n{"@timestamp":…,"message":"hello",…}\\n'
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Stream = Literal["stdout", "stderr"]

INDEX_PREFIX = "sms-logs-"
INDEX_PATTERN = f"{INDEX_PREFIX}*"
LEVELS: dict[Stream, str] = {"stdout": "info", "stderr": "warning"}


@dataclass(frozen=True)
class OutputSource:
    """Which run (and attempt of it) printed the lines, and what it ran where."""

    run_id: str
    attempt: int
    script: str
    version: int | None
    host: str
    fleet: bool = False
    """One host of a fleet run: the host is part of the spool file's name and of the document ids."""

    @property
    def prefix(self) -> str:
        """What starts the run log's lines of this host in a fleet run: ``[web-01] `` (nothing on one host)."""
        return f"[{self.host}] " if self.fleet else ""

    @property
    def key(self) -> str:
        """Names this attempt's spool file (on this host, in a fleet run)."""
        return f"{self.run_id}.{self.attempt}.{self.host}" if self.fleet else f"{self.run_id}.{self.attempt}"


def index_name(timestamp: float) -> str:
    """The daily index of a line printed at ``timestamp`` (UTC day).

    >>> index_name(0.0)
    'sms-logs-1970.01.01'
    """
    return f"{INDEX_PREFIX}{datetime.fromtimestamp(timestamp, UTC):%Y.%m.%d}"


def bulk_records(source: OutputSource, stream: Stream, first_line: int, timestamp: float, texts: list[str]) -> str:
    """The NDJSON bulk records (action line, source line) of ``texts``, printed at ``timestamp``
    and numbered from ``first_line`` on (line numbers count both streams of the attempt)."""
    action, before, after = _templates(source, stream)
    index = index_name(timestamp)
    stamp = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")
    return "".join(
        action % (index, line) + before % stamp + _text(text) + after % line
        for line, text in enumerate(texts, first_line)
    )


@functools.lru_cache(maxsize=64)
def _templates(source: OutputSource, stream: Stream) -> tuple[str, str, str]:
    """%-templates around the parts that change per line: index and id, timestamp, message, line."""
    fixed = json.dumps(
        {"log": {"level": LEVELS[stream]}, "host": {"name": source.host},
         "sms": {"script": source.script, "version": source.version, "run_id": source.run_id,
                 "attempt": source.attempt, "stream": stream, "line": 0}},
        separators=(",", ":"),
    ).replace("%", "%%")
    where = f"{source.host}:" if source.fleet else ""
    id_prefix = json.dumps(f"{source.run_id}:{source.attempt}:{where}")[:-1].replace("%", "%%")
    return (
        '{"index":{"_index":"%s","_id":' + id_prefix + '%d"}}\n',
        '{"@timestamp":"%s","message":',
        "," + fixed[1:].removesuffix('"line":0}}') + '"line":%d}}\n',
    )


MAPPINGS: dict[str, object] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date_nanos"},
        "message": {"type": "text", "norms": False},
        "log": {"properties": {"level": {"type": "keyword"}}},
        "host": {"properties": {"name": {"type": "keyword"}}},
        "sms": {
            "properties": {
                "script": {"type": "keyword"},
                "version": {"type": "integer"},
                "run_id": {"type": "keyword"},
                "attempt": {"type": "integer"},
                "stream": {"type": "keyword"},
                "line": {"type": "long"},
            }
        },
    },
}
"""The index template's mappings: keywords for filters, full text for ``message``."""

_text = json.JSONEncoder(ensure_ascii=False).encode
