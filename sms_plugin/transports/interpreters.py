"""Interpreters are data: how to name the uploaded file and which plan runs it.

>>> INTERPRETERS["ksh"].plan("/home/u/.sms/run/r1/x.ksh", ["a b"]).argv
['ksh', '/home/u/.sms/run/r1/x.ksh', 'a b']
>>> INTERPRETERS["original"].plan("/opt/jobs/nightly.sh", ["--full"]).argv
['/opt/jobs/nightly.sh', '--full']
>>> INTERPRETERS["original"].plan("D:/jobs/nightly.PS1", []).kind
'powershell'
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from sms_plugin.errors import InvalidInput
from sms_plugin.transports.base import Plan, PlanKind

_KIND_BY_SUFFIX: dict[str, PlanKind] = {".ps1": "powershell", ".bat": "batch", ".cmd": "batch"}


@dataclass(frozen=True)
class Interpreter:
    """How one kind of script is run.

    ``program`` is the argument vector before the script path; empty for scripts a Windows host
    runs itself (PowerShell, batch) and for "original" scripts, which already live on the server
    and are run by their absolute path.
    """

    name: str
    suffix: str
    program: tuple[str, ...]
    kind: PlanKind = "program"
    uploads: bool = True
    encoding: str = "utf-8"
    """How the script text is written: "utf-8", "utf-8-bom" (PowerShell 2.0 reads a file
    without BOM in the ANSI code page) or "utf-8-crlf" (cmd.exe: CRLF line ends, no BOM)."""

    def plan(
        self, script: str, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
        run_id: str | None = None,
    ) -> Plan:
        """The plan that runs ``script`` (its path on the host) with ``args``; an "original"
        script's kind follows its suffix (.ps1: PowerShell; .bat, .cmd: batch)."""
        kind = self.kind if self.uploads else _KIND_BY_SUFFIX.get(_suffix(script), "program")
        return Plan(program=self.program, script=script, args=tuple(args), kind=kind, env=dict(env or {}),
                    cwd=cwd, run_id=run_id)

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
        Interpreter("powershell", ".ps1", (), kind="powershell", encoding="utf-8-bom"),
        Interpreter("cmd", ".bat", (), kind="batch", encoding="utf-8-crlf"),
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


def _suffix(path: str) -> str:
    """The lower-case suffix of a POSIX or Windows path ("" if none)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[1].lower() if "." in name else ""
