"""Interpreters are data: how to name the uploaded file and how to build the argument vector.

>>> INTERPRETERS["ksh"].argv("/home/u/.sms/run/x.ksh", ["a b"])
['ksh', '/home/u/.sms/run/x.ksh', 'a b']
>>> INTERPRETERS["original"].argv("/opt/jobs/nightly.sh", ["--full"])
['/opt/jobs/nightly.sh', '--full']
"""

from __future__ import annotations

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

    def argv(self, script_path: str, args: list[str]) -> list[str]:
        return [*self.program, script_path, *args]


INTERPRETERS: dict[str, Interpreter] = {
    i.name: i
    for i in (
        Interpreter("bash", ".sh", ("bash",)),
        Interpreter("sh", ".sh", ("sh",)),
        Interpreter("ksh", ".ksh", ("ksh",)),
        Interpreter("python3", ".py", ("python3",)),
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
