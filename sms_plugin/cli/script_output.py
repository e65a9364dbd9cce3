"""How ``sms run --wait`` and ``sms logs`` print a run's output: the script's own bytes on stdout,
nothing around them (docs/cli.md, "A run's output").

- Lines are written whole, never wrapped; a ``\\r`` inside a line is kept.
- A line SMS delivered in pieces (over 256 KiB, each piece but the last ending with
  ``[sms: line continues]``) is joined back into the one line the script wrote.
- Invalid UTF-8 reached SMS as U+FFFD (the transport decodes with ``errors="replace"``) and is written
  so; a line ending ``\\r\\n`` is written ``\\n``; the last line gets a ``\\n`` if it had none.
- The script's stderr goes to stdout in the order it came, or to stderr with ``split_stderr``.
- SMS's own messages about the run are shown (dim, on stderr) only when stderr is a terminal.
- With ``tail``: only the last ``tail`` lines, written at the end; :meth:`finish` says how many were
  left out.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TYPE_CHECKING, BinaryIO

from sms_plugin.transports.base import CONTINUES, MAX_LINE_CHARS

if TYPE_CHECKING:
    from rich.console import Console

    from sms_plugin.run_results import LogLine


def is_piece(text: str) -> bool:
    """True for a piece of a longer line: exactly the limit long and ending with the marker (a line
    the script wrote that way is taken for a piece: the one case the joining cannot tell apart)."""
    return len(text) == MAX_LINE_CHARS and text.endswith(CONTINUES)


class ScriptOutput:
    """Writes a run's :class:`LogLine` s as the script wrote them; :meth:`finish` at the end."""

    def __init__(
        self, *, tail: int | None = None, split_stderr: bool = False,
        stdout: BinaryIO | None = None, stderr: BinaryIO | None = None, notes: Console | None = None,
    ) -> None:
        self._targets = {"stdout": stdout or sys.stdout.buffer, "stderr": stderr or sys.stderr.buffer}
        self._split = split_stderr
        self._notes = notes
        self._pieces: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._kept: deque[tuple[str, bytes]] | None = None if tail is None else deque(maxlen=tail)
        self._lines = 0

    def add(self, line: LogLine) -> None:
        """One log record: output lines are written (or kept for the tail), SMS's messages noted."""
        if line.stream is None:
            if self._notes is not None:
                self._notes.print(f"sms: {line.message}", style="dim", markup=False, highlight=False, soft_wrap=True)
            return
        for text in line.message.split("\n"):
            if is_piece(text):
                self._pieces[line.stream].append(text.removesuffix(CONTINUES))
                continue
            self._emit(line.stream, "".join(self._pieces[line.stream]) + text)
            self._pieces[line.stream].clear()
        self._flush()

    def finish(self) -> int:
        """Writes what is still held (a cut-off last piece, the tail); returns how many lines were left out."""
        for stream, pieces in self._pieces.items():
            if pieces:
                self._emit(stream, "".join(pieces))
                pieces.clear()
        if self._kept is None:
            self._flush()
            return 0
        for stream, data in self._kept:
            self._target(stream).write(data)
        self._flush()
        return self._lines - len(self._kept)

    def _emit(self, stream: str, text: str) -> None:
        self._lines += 1
        data = (text + "\n").encode("utf-8", errors="replace")
        if self._kept is not None:
            self._kept.append((stream, data))
        else:
            self._target(stream).write(data)

    def _target(self, stream: str) -> BinaryIO:
        return self._targets["stderr" if stream == "stderr" and self._split else "stdout"]

    def _flush(self) -> None:
        for target in self._targets.values():
            target.flush()
