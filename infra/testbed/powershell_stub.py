"""The test host's answer to ``powershell.exe``: an explicit interpreter for exactly the scripts
the SMS Windows transport sends (see ``sms_plugin/transports/windows_commands.py``).

No PowerShell runs on Linux test machines (Wine's ``powershell.exe`` is an empty stub), so the
test host decodes ``-EncodedCommand`` and recognises three shapes of script:

* upload: ``$path = '...'`` and a loop over ``[Console]::In.ReadLine()`` → writes the decoded
  base64 lines to that path (through the Wine drive mapping) and prints the SHA-256;
* remove: ``Remove-Item -LiteralPath '...' -Recurse`` → deletes the file or folder;
* run (the PSRP pipeline wrapper, :func:`pipeline_body`): ``& 'script.ps1' 'arg' ...`` → prints
  ``arg[N]=value`` for every argument it parsed, so tests see what PowerShell's single-quote rules
  would hand over, then *plays* the script body, which must consist of these statements only:
  ``Write-Output 'text'`` (stdout), ``Write-Error 'text'`` (stderr), ``Start-Sleep -Seconds N``,
  ``exit N`` (the exit code), ``throw 'text'`` (a terminating error: stderr, exit code 1), blank
  lines, ``#`` comments and ``param(...)``. Any other statement is refused (stderr, exit code 1):
  this is not PowerShell, only enough of it to show streaming, the error stream and exit codes.

Anything else fails with exit code 1 and a message on stderr. Single-quoted literals are parsed
with PowerShell's rules: only the quote characters ``' ‘ ’ ‚ ‛`` are special, a doubled one is one
literal quote.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import shutil
import signal
import threading
from collections.abc import Callable
from typing import BinaryIO

from infra.testbed import wine

_QUOTES = "'\u2018\u2019\u201a\u201b"
_ENCODED = re.compile(r"^powershell\.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand ([A-Za-z0-9+/=]+)$", re.I)


def literals(text: str) -> tuple[list[str], str]:
    """The single-quoted literals at the start of ``text`` (separated by spaces) and the rest."""
    values: list[str] = []
    i = 0
    while i < len(text) and text[i] in _QUOTES:
        i += 1
        value = []
        while True:
            if i >= len(text):
                raise ValueError("unterminated string literal")
            if text[i] in _QUOTES:
                if i + 1 < len(text) and text[i + 1] in _QUOTES:
                    value.append(text[i])
                    i += 2
                    continue
                i += 1
                break
            value.append(text[i])
            i += 1
        values.append("".join(value))
        while i < len(text) and text[i] == " ":
            i += 1
    return values, text[i:]


class ScriptedJob:
    """A "process" played by a Python function in a thread, with real pipes for its streams."""

    def __init__(self, body: Callable[[BinaryIO, BinaryIO, BinaryIO], int]) -> None:
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.stdin = os.fdopen(stdin_w, "wb")
        self.stdout = os.fdopen(out_r, "rb")
        self.stderr = os.fdopen(err_r, "rb")
        self._code = 1
        streams = os.fdopen(stdin_r, "rb"), os.fdopen(out_w, "wb"), os.fdopen(err_w, "wb")

        def run() -> None:
            try:
                self._code = body(*streams)
            except Exception as error:  # noqa: BLE001 - reported like a PowerShell error
                streams[2].write(f"{type(error).__name__}: {error}\r\n".encode())
                self._code = 1
            finally:
                for stream in streams:
                    stream.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self) -> int:
        self._thread.join()
        return self._code

    def end(self, sig: signal.Signals) -> None:
        self.stdin.close()


def _upload(path: str) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    def body(stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO) -> int:
        target = wine.unix_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(target, "wb") as file:
            for line in stdin:
                line = line.strip()
                if not line:
                    break
                data = base64.b64decode(line, validate=True)
                file.write(data)
                digest.update(data)
        stdout.write(digest.hexdigest().encode() + b"\r\n")
        return 0

    return body


def _remove(path: str) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    def body(stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO) -> int:
        target = wine.unix_path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # Remove-Item -Recurse
        else:
            target.unlink(missing_ok=True)
        return 0

    return body


_STATEMENT = re.compile(r"^(Write-Output|Write-Error|throw|Start-Sleep -Seconds|exit) +(.*)$", re.I)


def _play(path: str, args: list[str]) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    """Prints the parsed arguments, then plays the script's few supported statements."""

    def body(stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO) -> int:
        for number, value in enumerate(args):
            stdout.write(f"arg[{number}]={value}\r\n".encode())
            stdout.flush()
        text = wine.unix_path(path).read_text(encoding="utf-8-sig")
        for line in (raw.strip() for raw in text.splitlines()):
            if not line or line.startswith("#") or line.lower().startswith("param("):
                continue
            match = _STATEMENT.match(line)
            if match is None:
                stderr.write(f"test host: cannot play {line[:60]!r} (see infra/testbed/powershell_stub.py)\r\n".encode())
                return 1
            verb, operand = match.group(1).lower(), match.group(2).strip()
            if verb in ("exit", "start-sleep -seconds"):
                number = int(operand)
                if verb == "exit":
                    return number
                if select.select([stdin], [], [], number)[0]:
                    return 1  # stdin closed: the pipeline was stopped
                continue
            (value,), rest = literals(operand)
            if rest.strip():
                raise ValueError(f"unexpected text after the literal: {rest[:40]!r}")
            (stdout if verb == "write-output" else stderr).write(value.encode() + b"\r\n")
            (stdout if verb == "write-output" else stderr).flush()
            if verb == "throw":
                return 1
        return 0

    return body


def _unsupported(reason: str) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    def body(stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO) -> int:
        stderr.write(f"test host: {reason}\r\n".encode())
        return 1

    return body


def job_for(line: str) -> ScriptedJob | None:
    """A job answering ``line`` if it is a powershell.exe command, else None (cmd.exe runs it)."""
    if not line.lower().startswith("powershell"):
        return None
    match = _ENCODED.match(line.strip())
    if not match:
        return ScriptedJob(_unsupported(f"only -EncodedCommand PowerShell is understood here: {line[:80]}"))
    script = base64.b64decode(match.group(1)).decode("utf-16-le")
    return ScriptedJob(_interpret(script))


def _interpret(script: str) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    for line in script.splitlines():
        if line.startswith("$path = ") and "[Console]::In.ReadLine()" in script:
            (path,), _ = literals(line.removeprefix("$path = "))
            return _upload(path)
        if line.startswith("Remove-Item -LiteralPath "):
            (path, *_), _ = literals(line.removeprefix("Remove-Item -LiteralPath "))
            return _remove(path)
    return _unsupported("this PowerShell script is not one the SMS transport sends")


_PIPED = "| Out-String -Stream -Width 4096"


def pipeline_body(script: str) -> Callable[[BinaryIO, BinaryIO, BinaryIO], int]:
    """The interpreter for a PSRP pipeline's script: the SMS run wrapper
    (``windows_commands.run_script``), else the shapes :func:`job_for` knows."""
    for line in (raw.strip() for raw in script.splitlines()):
        if line.startswith("& ") and line.endswith(_PIPED):
            values, rest = literals(line.removeprefix("& ").removesuffix(_PIPED))
            if rest.strip() or not values:
                return _unsupported(f"unexpected text after the arguments: {rest[:40]!r}")
            return _play(values[0], values[1:])
    return _interpret(script)
