"""Interpreters are data: how to name the uploaded file and how to build the argument vector.

>>> INTERPRETERS["ksh"].argv("/home/u/.sms/run/x.ksh", ["a b"])
['ksh', '/home/u/.sms/run/x.ksh', 'a b']
>>> INTERPRETERS["original"].argv("/opt/jobs/nightly.sh", ["--full"])
['/opt/jobs/nightly.sh', '--full']
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from sms_plugin.errors import InvalidInput


@dataclass(frozen=True)
class Interpreter:
    """How one kind of script is run.

    ``program`` is the argument vector before the script path; empty for "original" scripts,
    which already live on the server and are run by their absolute path.
    """

    name: str
    suffix: str
    program: tuple[str, ...]
    uploads: bool = True
    encoding: str = "utf-8"
    """How the script text is written: "utf-8", "utf-8-bom" (PowerShell 2.0 reads a file
    without BOM in the ANSI code page) or "utf-8-crlf" (cmd.exe: CRLF line ends, no BOM)."""

    def argv(self, script_path: str, args: list[str]) -> list[str]:
        return [*self.program, script_path, *args]

    def encode(self, text: str) -> bytes:
        """The bytes uploaded for script ``text``.

        >>> INTERPRETERS["powershell"].encode("Write-Output 'é'")[:3]
        b'\\xef\\xbb\\xbf'
        >>> INTERPRETERS["cmd"].encode("echo a\\necho b\\r\\n")
        b'echo a\\r\\necho b\\r\\n'
        """
        if self.encoding == "utf-8-bom":
            return codecs.BOM_UTF8 + text.encode("utf-8")
        if self.encoding == "utf-8-crlf":
            return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        return text.encode("utf-8")


INTERPRETERS: dict[str, Interpreter] = {
    i.name: i
    for i in (
        Interpreter("bash", ".sh", ("bash",)),
        Interpreter("sh", ".sh", ("sh",)),
        Interpreter("ksh", ".ksh", ("ksh",)),
        Interpreter("python3", ".py", ("python3",)),
        Interpreter(
            "powershell", ".ps1",
            ("powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"),
            encoding="utf-8-bom",
        ),
        Interpreter("cmd", ".bat", ("cmd.exe", "/c"), encoding="utf-8-crlf"),
        Interpreter("original", "", (), uploads=False),
    )
}


def interpreter(name: str) -> Interpreter:
    """The interpreter called ``name``, or a clear InvalidInput naming the known ones."""
    try:
        return INTERPRETERS[name]
    except KeyError:
        known = ", ".join(sorted(INTERPRETERS))
        raise InvalidInput(f"unknown interpreter {name!r}; known: {known}") from None
