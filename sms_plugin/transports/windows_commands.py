"""The command lines the Windows transport sends, and how arguments are quoted for them.

Everything here is PowerShell 2.0 / cmd.exe syntax, because the oldest supported servers
(Windows Server 2008 R2) ship PowerShell 2.0.

PowerShell: a script runs in a PSRP pipeline (:func:`run_script`); upload and remove run through
``powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand <base64 of
UTF-16LE>`` in a WinRS shell. The scripts invoke the script with ``&`` and each argument as a
single-quoted literal, in which PowerShell interprets
nothing but the quote characters themselves (``'`` and its typographic forms, doubled here):

>>> ps_quote("it's $(calc) `n")
"'it''s $(calc) `n'"

cmd.exe cannot carry every string: ``%`` and ``!`` expand variables even inside quotes, ``^``
and ``"`` change how the rest of the line is parsed, and ``& | < > ( )`` are safe inside quotes
only until a batch file uses ``%~1`` or an unquoted ``%1``. Arguments for cmd.exe are therefore
restricted (see :func:`cmd_quote`) and refused with InvalidInput before anything runs.

>>> cmd_line(["C:\\\\jobs\\\\nightly.bat", "a b"])
'cmd.exe /c ""C:\\\\jobs\\\\nightly.bat" "a b""'
"""

from __future__ import annotations

import base64

from sms_plugin.errors import InvalidInput

POWERSHELL = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"
PIPED = "| Out-String -Stream -Width 4096"
"""Turns a script's output objects into lines of text, as PowerShell's console would show them."""
CMD_FORBIDDEN = frozenset('%!^"&|<>()\r\n\t\x00\x1a')
"""Characters refused in arguments for cmd.exe (.bat/.cmd scripts and programs started through it)."""


def ps_quote(value: str) -> str:
    """``value`` as a PowerShell single-quoted string literal (nothing inside is interpreted)."""
    return "'" + "".join(c * 2 if c in _PS_QUOTES else c for c in value) + "'"


def cmd_quote(value: str) -> str:
    """``value`` in double quotes for cmd.exe; InvalidInput if it holds a refused character."""
    bad = sorted({c for c in value if c in CMD_FORBIDDEN or ord(c) < 32})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise InvalidInput(
            f"argument {value[:40]!r} contains {shown}, which cmd.exe cannot pass on safely; "
            f"cmd.exe arguments may not contain {''.join(sorted(CMD_FORBIDDEN - set(chr(i) for i in range(32))))} "
            f"or control characters (see docs/windows.md)"
        )
    return f'"{value}"'


def cmd_line(argv: list[str]) -> str:
    """``cmd.exe /c ""program" "arg" ..."``: the outer quotes are the ones cmd /c strips."""
    return 'cmd.exe /c "' + " ".join(cmd_quote(part) for part in argv) + '"'


def encoded(script: str) -> str:
    """A ``powershell.exe ... -EncodedCommand`` line running ``script`` (PowerShell 2.0 syntax)."""
    return POWERSHELL + base64.b64encode(script.encode("utf-16-le")).decode()


def run_script(path: str, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> str:
    """The script of the PSRP pipeline that runs a .ps1 with literal arguments.

    The script's output goes through ``Out-String -Stream`` (so every output object is a line of
    text); its error stream stays the error stream. The last output object is the exit code as an
    ``[int]``: the script's ``exit N``, else the last native program's ``$LASTEXITCODE``, else 0;
    a terminating error is written to the error stream and gives 1. ``env`` and ``cwd`` are set
    in the runspace first.
    """
    call = " ".join(["&", ps_quote(path), *(ps_quote(a) for a in args)])
    setup = "".join(f"[Environment]::SetEnvironmentVariable({ps_quote(k)}, {ps_quote(v)})\n" for k, v in (env or {}).items())
    if cwd:
        setup += f"Set-Location -LiteralPath {ps_quote(cwd)}\n"
    return setup + (
        "$global:LASTEXITCODE = 0\n"
        "$sms_exit = 0\n"
        "try {\n"
        f"  {call} {PIPED}\n"
        "  $sms_exit = $LASTEXITCODE\n"
        "} catch {\n"
        "  Write-Error -ErrorRecord $_\n"
        "  $sms_exit = 1\n"
        "}\n"
        "[int]$sms_exit\n"
    )


def upload(path: str) -> str:
    """Writes base64 lines read from stdin (an empty line ends) to ``path`` and prints the
    SHA-256 of what it wrote, in lower-case hex."""
    return encoded(
        "$ErrorActionPreference = 'Stop'\n"
        f"$path = {ps_quote(path)}\n"
        "$dir = [System.IO.Path]::GetDirectoryName($path)\n"
        "if (-not (Test-Path -LiteralPath $dir)) { [void](New-Item -ItemType Directory -Path $dir) }\n"
        "$file = [System.IO.File]::Create($path)\n"
        "$sha = [System.Security.Cryptography.SHA256]::Create()\n"
        "try {\n"
        "  while ($true) {\n"
        "    $line = [Console]::In.ReadLine()\n"
        "    if ($line -eq $null -or $line -eq '') { break }\n"
        "    $bytes = [System.Convert]::FromBase64String($line)\n"
        "    $file.Write($bytes, 0, $bytes.Length)\n"
        "    [void]$sha.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)\n"
        "  }\n"
        "  [void]$sha.TransformFinalBlock((New-Object byte[] 0), 0, 0)\n"
        "} finally { $file.Close() }\n"
        "[System.BitConverter]::ToString($sha.Hash).Replace('-', '').ToLower()\n"
    )


def remove(path: str) -> str:
    """Deletes the file or folder ``path`` (a folder with what is in it); a missing one is not an error."""
    return encoded(f"Remove-Item -LiteralPath {ps_quote(path)} -Recurse -Force -ErrorAction SilentlyContinue\nexit 0\n")


TEMP_DIR = "echo %TEMP%"
"""A cmd.exe line printing the account's temp folder (scripts are uploaded below it)."""
VERSION = "ver"
"""A cmd.exe line printing the Windows version."""
