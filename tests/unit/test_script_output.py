"""How the CLI writes a run's output back as bytes (sms_plugin/cli/script_output.py): pieces of a long
line joined, per stream, even when the other stream's lines come between them; the tail; stderr apart."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from sms_plugin.cli.script_output import ScriptOutput
from sms_plugin.run_results import LogLine
from sms_plugin.transports.base import CONTINUES, LineSplitter, MAX_LINE_CHARS

NOW = datetime.now(UTC)


def _lines(stream: str, data: bytes) -> list[LogLine]:
    """What the run log holds for ``data`` written on ``stream``: the transport's lines, one record each."""
    splitter = LineSplitter()
    return [LogLine(NOW, "INFO", text, stream=stream) for text in splitter.feed(data) + splitter.flush()]


def _written(records: list[LogLine], **options: object) -> tuple[bytes, bytes, int]:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    printer = ScriptOutput(stdout=stdout, stderr=stderr, **options)  # type: ignore[arg-type]
    for record in records:
        printer.add(record)
    left_out = printer.finish()
    return stdout.getvalue(), stderr.getvalue(), left_out


def test_long_lines_are_joined_even_with_the_other_streams_lines_between_their_pieces():
    long = b"y" * (2 * MAX_LINE_CHARS + 5)
    out_pieces = _lines("stdout", long + b"\n")
    assert len(out_pieces) == 3 and out_pieces[0].message.endswith(CONTINUES)
    records = [out_pieces[0], *_lines("stderr", b"between\n"), *out_pieces[1:]]
    assert _written(records) == (b"between\n" + long + b"\n", b"", 0)
    assert _written(records, split_stderr=True) == (long + b"\n", b"between\n", 0)


def test_joined_messages_carriage_returns_and_sms_own_messages():
    records = [LogLine(NOW, "INFO", "a\n\nb\rc", stream="stdout"), LogLine(NOW, "INFO", "Started as process group 7")]
    assert _written(records) == (b"a\n\nb\rc\n", b"", 0)


def test_the_tail_keeps_the_last_lines_and_counts_the_rest():
    records = [LogLine(NOW, "INFO", f"line {i}", stream="stdout") for i in range(10)]
    assert _written(records, tail=3) == (b"line 7\nline 8\nline 9\n", b"", 7)
    assert _written(records, tail=0) == (b"", b"", 10)
