"""Command lines for POSIX hosts: quoting for ``/bin/sh`` and the process-group launcher.

The launcher starts the command as the leader of a new process group (``setsid`` where the host
has it, job control of ``/bin/sh`` where it does not), so that one signal to the group reaches the
script and every child it spawned, backgrounded ones included. The group leader first writes its
own id as the line ``sms-pgid:<id>`` to standard output, then ``exec``s the command; the launcher
waits for it and exits with its exit code. Only POSIX ``sh`` syntax is used.

>>> render(Command(argv=["bash", "/tmp/x.sh", "it's $(here)"], env={"A": "1"}))[-44:]
"sms-job env A=1 bash /tmp/x.sh 'it'\\"'\\"'s $(here)'"
"""

from __future__ import annotations

import re
import shlex

from sms_plugin.transports.base import Command

PGID_MARKER = "sms-pgid:"

_GROUP_LEADER = f'echo "{PGID_MARKER}$$"; exec "$@"'
_LAUNCHER = (
    'if command -v setsid >/dev/null 2>&1; then setsid /bin/sh -c "$0" sms-job "$@" & '
    'else set -m; /bin/sh -c "$0" sms-job "$@" & fi; wait $!'
)


def quote(word: str) -> str:
    """``word`` single-quoted for ``/bin/sh`` so that it arrives byte for byte."""
    return shlex.quote(word)


def render(command: Command) -> str:
    """The whole shell line that runs ``command`` in a new process group on a POSIX host."""
    words = [f"{name}={value}" for name, value in command.env.items()]
    prefix = ["env", *words] if words else []
    argv = " ".join(quote(w) for w in [*prefix, *command.argv])
    line = f"exec /bin/sh -c {quote(_LAUNCHER)} {quote(_GROUP_LEADER)} {argv}"
    return f"cd {quote(command.cwd)} && {line}" if command.cwd else line


def signal_group_line(pgid: int, signal: str) -> str:
    """The shell line that sends ``signal`` (TERM, KILL or 0) to process group ``pgid``."""
    if signal not in {"TERM", "KILL", "0"}:
        raise ValueError(f"unsupported signal {signal!r}")
    return f"kill -{signal} -- -{int(pgid)} 2>/dev/null"


def parse_pgid(line: str) -> int | None:
    """The process group id in the launcher's first line, or None if the line is not the marker."""
    match = re.fullmatch(rf"{PGID_MARKER}(\d+)", line.strip())
    return int(match.group(1)) if match else None
