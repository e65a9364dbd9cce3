"""Command lines for POSIX hosts: quoting, the process-group launcher and the kill line.

Only POSIX ``sh`` syntax and POSIX utilities (``ps -o``, ``mkdir``, ``chmod``, ``date``, ``rm``, ``kill``) are
used, so the launcher runs under dash, ksh88/ksh93, bash or any other POSIX ``sh``.

How a run is started:
- The *leader* runs as the leader of a process group of its own: through ``setsid`` where the
  server has it (then it leads its group by construction: its ``$0`` says so); elsewhere it relies
  on sshd, which starts every exec channel in a new session (the leader checks with ``ps`` that it
  really leads its group, and refuses to run otherwise).
- The leader writes ``sms-pgid:<id>`` as the first line of stdout, exports ``SMS_RUN_ID`` (a
  marker that every descendant inherits, daemonised ones included), writes the state file
  ``$HOME/.sms/state/<run id>`` (``<run id> <pgid> <start epoch>``; the folder is made or kept mode
  0700, the script's own umask is untouched), runs the command, removes
  the state file and exits with the command's exit code.
- Where ``setsid`` exists, a launcher outside the group waits for the leader, so a killed run
  still reports 128 + signal as its exit code.

How a run is stopped (``transports.recovery``): :func:`signal_run_line` signals the process group and every process whose
environment carries the run's marker (read from ``/proc/<pid>/environ`` where the system has it),
so children that left the group with ``setsid`` or a double fork are found too.

The run's variables never appear on a command line (``ps`` shows those to every user of the
host): the transport writes them to a private file (:func:`env_file_text`), which the launch line
sources and removes before it starts the launcher.

>>> line = render(Plan(program=("bash",), script="/tmp/x.sh", args=("it's $(here)",), env={"A": "1"}), env_file="/h/e")
>>> line[:40]
'. /h/e && rm -f /h/e && exec /bin/sh -c '
>>> line.rsplit(" - ", 1)[1][:15]
'bash /tmp/x.sh '
"""

from __future__ import annotations

import posixpath
import re
import shlex

from sms_plugin.errors import InvalidInput
from sms_plugin.transports.base import Plan

PGID_MARKER = "sms-pgid:"
RUN_MARKER = "SMS_RUN_ID"
STATE_DIR = ".sms/state"
"""Where the state files of running scripts live, relative to the user's home."""

_LEADER = (
    'trap : TERM; run=$1; shift; if [ "$0" != sms-setsid ]; then pg=$(ps -o pgid= -p $$ 2>/dev/null); pg=$(echo $pg); '
    'if [ "$pg" != "$$" ]; then echo "sms: cannot start the script in a process group of its own '
    '(process $$ is in group ${pg:-unknown})" >&2; exit 126; fi; fi; '
    f'echo "{PGID_MARKER}$$"; '
    f'if [ "$run" != - ]; then {RUN_MARKER}=$run; export {RUN_MARKER}; s="$HOME/{STATE_DIR}/$run"; '
    f'd="$HOME/{STATE_DIR}"; {{ [ -d "$d" ] || (umask 077; mkdir -p "$d"); }} && chmod 700 "$d" && '
    f'echo "$run $$ $(date +%s)" > "$s"; fi; '
    '"$@"; rc=$?; [ "$run" = - ] || rm -f "$s"; exit $rc'
)


def _launcher(shell: str) -> str:
    return (
        f'if command -v setsid >/dev/null 2>&1; then setsid {shell} -c "$0" sms-setsid "$@" & wait $!; '
        f'else exec {shell} -c "$0" sms-job "$@"; fi'
    )


def quote(word: str) -> str:
    """``word`` single-quoted for a POSIX shell so that it arrives byte for byte."""
    return shlex.quote(word)


def program_argv(plan: Plan) -> list[str]:
    """The argument vector of ``plan`` on a POSIX host, which runs "program" plans only."""
    if plan.kind != "program":
        raise InvalidInput(f"a {plan.kind} script runs on Windows hosts only")
    return plan.argv


def render(plan: Plan, shell: str = "/bin/sh", env_file: str | None = None) -> str:
    """The whole shell line that runs ``plan`` in a new process group on a POSIX host.

    ``shell`` is the POSIX shell the launcher uses (``/usr/xpg4/bin/sh`` on old Solaris, say).
    ``env_file`` is where the transport wrote ``plan.env`` (:func:`env_file_text`; required when
    the plan has variables): the line sources it, so the launcher inherits them and the leader's
    SMS_RUN_ID still wins, and removes it before anything runs.
    """
    argv = " ".join(quote(w) for w in [plan.run_id or "-", *program_argv(plan)])
    if plan.env and env_file is None:
        raise ValueError("a plan's variables go in a file (env_file), never on a command line")
    line = f"exec {quote(shell)} -c {quote(_launcher(quote(shell)))} {quote(_LEADER)} {argv}"
    if env_file is not None:
        line = f". {quote(env_file)} && rm -f {quote(env_file)} && {line}"
    return f"cd {quote(plan.cwd)} && {line}" if plan.cwd else line


def env_file_text(env: dict[str, str]) -> str:
    """The run's variables as a file ``sh`` sources: each one assigned, single-quoted, and exported
    (names are plain names, :class:`~sms_plugin.transports.base.Plan` checks them).

    >>> print(env_file_text({"A": "it's", "B": "two words"}), end="")
    A='it'"'"'s'
    export A
    B='two words'
    export B
    """
    return "".join(f"{name}={quote(value)}\nexport {name}\n" for name, value in env.items())


def receive_line(path: str, mode: int = 0o700) -> str:
    """A shell line that writes its stdin to ``path`` with ``mode`` (missing folders made mode 0700,
    the caller's umask untouched): how SMS puts a file on a host, with no SFTP.

    >>> receive_line("/h/.sms/run/r1/x.sh")
    '(umask 077 && mkdir -p /h/.sms/run/r1 && cat > /h/.sms/run/r1/x.sh) && chmod 700 /h/.sms/run/r1/x.sh'
    """
    file, folder = quote(path), quote(posixpath.dirname(path))
    return f"(umask 077 && mkdir -p {folder} && cat > {file}) && chmod {mode:o} {file}"


def receive_then(path: str, line: str, shell: str = "/bin/sh") -> str:
    """A shell line that writes its stdin to ``path`` (:func:`receive_line`), then runs ``line``:
    a script sent on its launch channel."""
    return f"exec {quote(shell)} -c {quote(f'{receive_line(path)} && {line}')}"


def remove_folder_line(path: str) -> str:
    """A shell line that removes ``path``, a file or a folder and what is in it (a run's uploads)."""
    return f"rm -rf -- {quote(path)}"


def signal_run_line(pgid: int | None, run_id: str | None, signal: str) -> str:
    """A shell line that sends ``signal`` (TERM, KILL or 0 to probe) to process group ``pgid``
    and to every process marked with ``run_id``; its exit status is 0 if any process got it."""
    if signal not in {"TERM", "KILL", "0"}:
        raise ValueError(f"unsupported signal {signal!r}")
    parts = ["f=1"]
    if pgid and signal == "0":  # a zombie (dead, not yet reaped) does not count as alive
        parts.append(
            f"ps -e -o pgid= -o stat= | awk '$1 == {int(pgid)} && $2 !~ /^Z/ {{ a = 1 }} END {{ exit !a }}' && f=0"
        )
    elif pgid:
        parts.append(f"kill -{signal} -{int(pgid)} 2>/dev/null && f=0")
    if run_id:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
            raise InvalidInput(f"unsafe run id {run_id!r}")
        parts.append(
            f"for p in $(grep -l -a -F -e '{RUN_MARKER}={run_id}' /proc/[0-9]*/environ 2>/dev/null); "
            f"do p=${{p#/proc/}}; p=${{p%/environ}}; kill -{signal} $p 2>/dev/null && f=0; done"
        )
    parts.append("exit $f")
    return "; ".join(parts)


def remove_state_line(run_id: str, *also: str) -> str:
    """A shell line that removes the state file of ``run_id`` (after its leader was killed), and
    the paths ``also`` (files or folders) in the same ``rm``."""
    extra = "".join(f" {quote(path)}" for path in also)
    return f'rm -rf -- "$HOME/{STATE_DIR}/"{quote(run_id)}{extra}'


def read_state_line(run_id: str) -> str:
    """A shell line that prints the state file of ``run_id`` (``<run id> <pgid> <start epoch>``)."""
    return f'cat "$HOME/{STATE_DIR}/"{quote(run_id)} 2>/dev/null'



def parse_pgid(line: str) -> int | None:
    """The process group id in the launcher's first line, or None if the line is not the marker."""
    match = re.fullmatch(rf"{PGID_MARKER}(\d+)", line.strip())
    return int(match.group(1)) if match else None
