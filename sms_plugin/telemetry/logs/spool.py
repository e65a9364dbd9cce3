"""The local spool: output lines wait on disk, in order, until Elasticsearch has them.

One attempt of a run writes one file ``<run_id>.<attempt>.ndjson`` of bulk-API records (two lines
each, see :mod:`documents`). Beside it:

- ``.offset``: how many bytes of the file Elasticsearch has acknowledged (replaced atomically);
- ``.done``: the writer closed the file (the run attempt ended);
- ``.lock``: whoever delivers holds an exclusive ``flock`` on it, so the flow process and the
  ``sms log-shipper`` service never send the same file at the same time.

The writer holds a shared ``flock`` on the file itself while it is open: a file without ``.done``
whose lock can be taken belongs to a writer that died. A crash anywhere is safe: the writer
flushes whole records, a reader only takes whole records (an even number of newlines), and
records sent again after a crash overwrite the same documents.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SUFFIX = ".ndjson"
CHUNK_BYTES = 8 * 1024 * 1024
"""At most this much of a spool file is read and sent at once (bounds the shipper's memory)."""


class SpoolWriter:
    """Appends records of one run attempt; :meth:`close` marks the file done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        fcntl.flock(self._file, fcntl.LOCK_SH)  # released by close() or by the process's death

    def write(self, records: str) -> None:
        """Append whole records and hand them to the OS (a process crash cannot lose them)."""
        self._file.write(records)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        _sibling(self.path, ".done").touch()


@dataclass(frozen=True)
class Chunk:
    """Whole records of a spool file from byte ``start`` to ``end``."""

    start: int
    end: int
    data: bytes


class SpoolFile:
    """One spool file as the deliverer sees it (hold :meth:`locked` while delivering)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = _sibling(path, ".offset")
        self.done_path = _sibling(path, ".done")
        self.lock_path = _sibling(path, ".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """True inside if this process may deliver the file now; False if another process does,
        or the file is gone (delivered and removed)."""
        if not self.path.exists():
            yield False
            return
        with open(self.lock_path, "a+b") as lock:
            if not _try_lock(lock, fcntl.LOCK_EX):
                yield False
                return
            try:
                if self.path.exists():
                    yield True
                else:  # removed meanwhile by the previous holder: drop the lock file we re-created
                    self.lock_path.unlink(missing_ok=True)
                    yield False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def delivered(self) -> int:
        """Bytes already acknowledged by Elasticsearch."""
        try:
            return int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def commit(self, offset: int) -> None:
        """Record that everything before ``offset`` is in Elasticsearch (atomic replace)."""
        staging = self.offset_path.with_name(self.offset_path.name + ".new")
        staging.write_text(str(offset))
        os.replace(staging, self.offset_path)

    def next_chunk(self, limit: int = CHUNK_BYTES) -> Chunk | None:
        """The next whole records after the delivered offset, at most ``limit`` bytes (or one
        record if a single record is bigger); None when there is nothing complete to send."""
        start = self.delivered()
        with open(self.path, "rb") as spool:
            spool.seek(start)
            data = spool.read(limit)
            while not _whole_records(data) and (more := spool.read(limit)):  # one huge record
                data += more
        end = _whole_records(data)
        return Chunk(start, start + end, data[:end]) if end else None

    def finished(self) -> bool:
        """The writer is gone: it closed the file, or its process died."""
        if self.done_path.exists():
            return True
        try:
            with open(self.path, "rb") as spool:
                return _try_lock(spool, fcntl.LOCK_EX)
        except FileNotFoundError:
            return True

    def complete(self) -> bool:
        """Finished and everything whole is delivered (a torn last record of a dead writer is dropped)."""
        return self.finished() and self.next_chunk() is None

    def remove(self) -> None:
        for path in (self.path, self.done_path, self.offset_path, self.lock_path):
            path.unlink(missing_ok=True)


def spool_files(folder: Path) -> list[SpoolFile]:
    """The spool files in ``folder``, oldest first."""
    paths = []
    for path in folder.glob(f"*{SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            paths.append((path.stat().st_mtime, path))
    return [SpoolFile(path) for _, path in sorted(paths)]


def spool_path(folder: Path, key: str) -> Path:
    return folder / f"{key}{SUFFIX}"


def _try_lock(file: IO[bytes], kind: int) -> bool:
    """Take ``flock`` of ``kind`` without waiting; True if it was free."""
    try:
        fcntl.flock(file, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_suffix(suffix)


def _whole_records(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole records (pairs of lines).

    >>> _whole_records(b'a\\nb\\nc\\nd'), _whole_records(b'a\\nb\\nc\\n'), _whole_records(b'a\\nb')
    (4, 4, 0)
    """
    last = data.rfind(b"\n")
    if data.count(b"\n") % 2:
        last = data.rfind(b"\n", 0, last)
    return last + 1
