"""The log spool and its delivery, with Elasticsearch faked at the client boundary: order,
exactly-once ids, crash safety, bounded chunks, retry on overload."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sms_plugin.telemetry.logs.delivery import Deliverer
from sms_plugin.telemetry.logs.documents import OutputSource
from sms_plugin.telemetry.logs.elastic import ShippingError
from sms_plugin.telemetry.logs.shipping import OUTPUT, SpoolHandler
from sms_plugin.telemetry.logs.spool import SpoolFile, SpoolWriter, spool_path

SOURCE = OutputSource(run_id="run-1", attempt=2, script="backup", version=3, host="web-01")


class FakeElasticsearch:
    """Keeps documents by (index, id) as Elasticsearch does; can answer 429 for the next bulks."""

    def __init__(self) -> None:
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        self.bulks: list[int] = []
        self.busy = 0
        self.indices = SimpleNamespace(put_index_template=lambda **_: None)

    def bulk(self, operations: bytes, filter_path: str) -> dict[str, Any]:
        lines = operations.decode().splitlines()
        self.bulks.append(len(operations))
        if self.busy:
            self.busy -= 1
            return {"errors": True, "items": [{"index": {"status": 429, "error": "busy"}}]}
        for action, body in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action)["index"]
            self.documents[(meta["_index"], meta["_id"])] = json.loads(body)
        return {"errors": False}


def _spool(tmp_path: Path, batches: list[list[str]], stream: str = "stdout") -> tuple[Path, SpoolWriter]:
    path = spool_path(tmp_path, SOURCE.key)
    writer = SpoolWriter(path)
    handler = SpoolHandler(SOURCE, writer)
    for number, texts in enumerate(batches):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "\n".join(texts), None, None)
        record.created = 1767225600.0 + number
        setattr(record, OUTPUT, (SOURCE, stream))
        handler.emit(record)
    return path, writer


def _messages(fake: FakeElasticsearch) -> list[tuple[str, int, str]]:
    docs = sorted(fake.documents.items(), key=lambda item: item[1]["sms"]["line"])
    return [(doc_id, doc["sms"]["line"], doc["message"]) for (_, doc_id), doc in docs]


def test_lines_arrive_in_order_once_with_ids_from_run_attempt_and_line(tmp_path):
    path, writer = _spool(tmp_path, [["a", "b"], ["", "c"]])
    writer.close()
    fake = FakeElasticsearch()
    assert Deliverer(fake, tmp_path).deliver() == 4  # type: ignore[arg-type]
    assert _messages(fake) == [("run-1:2:1", 1, "a"), ("run-1:2:2", 2, "b"), ("run-1:2:3", 3, ""), ("run-1:2:4", 4, "c")]
    doc = fake.documents[("sms-logs-2026.01.01", "run-1:2:1")]
    assert doc["log"] == {"level": "info"} and doc["host"] == {"name": "web-01"}
    assert doc["sms"] == {"script": "backup", "version": 3, "run_id": "run-1", "attempt": 2, "stream": "stdout", "line": 1}
    assert not path.exists()  # delivered and finished: the spool is cleaned up


def test_an_open_spool_is_delivered_as_it_grows_and_kept_until_its_writer_ends(tmp_path):
    path, writer = _spool(tmp_path, [["a"]])
    fake = FakeElasticsearch()
    deliverer = Deliverer(fake, tmp_path)  # type: ignore[arg-type]
    assert deliverer.deliver() == 1
    assert path.exists()  # the writer is still open
    writer.write(path.read_text().replace("run-1:2:1", "run-1:2:2"))  # one more record
    assert deliverer.deliver() == 1
    writer.close()
    assert deliverer.deliver() == 0 and not path.exists()
    assert sorted(doc_id for _, doc_id in fake.documents) == ["run-1:2:1", "run-1:2:2"]


def test_sending_again_after_a_crash_before_the_commit_duplicates_nothing(tmp_path):
    path, writer = _spool(tmp_path, [[f"line {i}" for i in range(100)]])
    writer.close()
    fake = FakeElasticsearch()
    spool = SpoolFile(path)
    chunk = spool.next_chunk()
    assert chunk is not None
    fake.bulk(chunk.data, "")  # sent, then the process died before spool.commit()
    assert Deliverer(fake, tmp_path).deliver() == 100  # type: ignore[arg-type]
    assert len(fake.documents) == 100 and len(fake.bulks) == 2


def test_a_torn_last_record_is_never_sent_and_a_dead_writer_counts_as_finished(tmp_path):
    path, writer = _spool(tmp_path, [["whole"]])
    writer.write('{"index":{"_index":"sms-logs-2026.01.01","_id":"run-1:2:2"}}\n{"@timest')  # crash mid-write
    spool = SpoolFile(path)
    assert not spool.finished()  # the writer (this open file) still holds its lock
    writer._file.close()  # the process died: no .done, lock gone
    assert spool.finished()
    fake = FakeElasticsearch()
    assert Deliverer(fake, tmp_path).deliver() == 1  # type: ignore[arg-type]
    assert [message for *_, message in _messages(fake)] == ["whole"]
    assert not path.exists()


def test_chunks_stay_within_the_limit_so_memory_is_bounded(tmp_path):
    path, writer = _spool(tmp_path, [[f"line {i}" for i in range(2000)]])
    writer.close()
    spool = SpoolFile(path)
    sizes = []
    while chunk := spool.next_chunk(limit=4096):
        sizes.append(len(chunk.data))
        spool.commit(chunk.end)
    assert len(sizes) > 50 and max(sizes) <= 4096
    assert sum(sizes) == path.stat().st_size


def test_a_record_bigger_than_the_limit_is_still_sent_whole(tmp_path):
    path, writer = _spool(tmp_path, [["x" * 10_000]])
    writer.close()
    chunk = SpoolFile(path).next_chunk(limit=1024)
    assert chunk is not None and chunk.end == path.stat().st_size


def test_overload_keeps_the_lines_for_a_later_attempt(tmp_path):
    path, writer = _spool(tmp_path, [["a", "b"]])
    writer.close()
    fake = FakeElasticsearch()
    fake.busy = 1
    deliverer = Deliverer(fake, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ShippingError, match="busy"):
        deliverer.deliver()
    assert SpoolFile(path).delivered() == 0 and path.exists()
    assert deliverer.deliver() == 2 and len(fake.documents) == 2


def test_one_deliverer_at_a_time_per_spool_file(tmp_path):
    path, writer = _spool(tmp_path, [["a"]])
    first, second = SpoolFile(path), SpoolFile(path)
    with first.locked() as mine:
        assert mine
        with second.locked() as also_mine:
            assert not also_mine
    writer.close()
