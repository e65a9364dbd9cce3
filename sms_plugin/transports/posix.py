"""Command lines for POSIX hosts: quoting, the process-group launcher and the kill line.

Only POSIX ``sh`` syntax and POSIX utilities are used, so the launcher runs under dash,
ksh88/ksh93, bash or any other POSIX ``sh``. It spawns few processes on the host (each costs the
host about a millisecond of CPU): the shell builtins do the rest.

How a run is started, on one exec channel (:func:`render`):
- A script sent on the channel's stdin is written to its folder (``mkdir -p -m 700`` and ``cat``:
  every folder made is mode 0700, the file 0600; the script's own umask is untouched).
- The *leader* runs as the leader of a process group of its own: through ``setsid`` where the
  server has it (then it leads its group by construction: its ``$0`` says so); elsewhere it relies
  on sshd, which starts every exec channel in a new session (the leader checks with ``ps`` that it
  really leads its group, and refuses to run otherwise).
- The leader writes ``sms-pgid:<id>`` as the first line of stdout, exports ``SMS_RUN_ID`` (a
  marker that every descendant inherits, daemonised ones included), writes the state file
  ``$HOME/.sms/state/<run id>`` (``<run id> <pgid>``; the folder is made mode 0700, and one an
  older SMS made is set to 0700 once), runs the command and exits with its exit code.
- Where ``setsid`` exists, the *launcher* (the channel's shell, outside the group) waits for the
  leader, so a killed run still reports 128 + signal as its exit code; then it does the end-of-run
  check itself: if the group is empty (``kill -0``, a builtin) and no process carries the run's
  marker (one ``grep`` over ``/proc/*/environ``), it removes the state file and the run's folder
  in one ``rm`` and writes :func:`done_mark` as the last bytes of stdout (:class:`DoneMark` takes
  it off), so the client needs no second channel; otherwise it removes the state file and the
  client's own check ends what is left. Without ``setsid`` the leader removes the state file.

How a run is stopped (``transports.recovery``): :func:`signal_run_line` signals the process group and every process whose
environment carries the run's marker (read from ``/proc/<pid>/environ`` where the system has it),
so children that left the group with ``setsid`` or a double fork are found too.

The run's variables never appear on a command line (``ps`` shows those to every user of the
host) nor on disk: they come first on the channel's stdin (:func:`stdin_of`), as shell code
(:func:`env_text`) that the launcher reads with the ``read`` builtin and evaluates.

>>> line = render(Plan(program=("bash",), script="/tmp/x.sh", args=("it's $(here)",), env={"A": "1"}))
>>> line[:16]
'exec /bin/sh -c '
>>> line.rsplit(" - ", 1)[1][:15]
"'' '' bash /tmp"
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
DONE_MARKER = "sms-done:"
"""What :func:`done_mark` says after its first byte, a NUL (which text output rarely ends a read with)."""

_STATE = f'"$HOME/{STATE_DIR}"'
_LEADER = (  # shell variables are sms_*: no run variable has such a name (SMS_ is refused in any case)
    'trap : TERM; sms_run=$1; shift; if [ "$0" != sms-setsid ]; then '
    'sms_pg=$(ps -o pgid= -p $$ 2>/dev/null); sms_pg=$(echo $sms_pg); '
    'if [ "$sms_pg" != "$$" ]; then echo "sms: cannot start the script in a process group of its own '
    '(process $$ is in group ${sms_pg:-unknown})" >&2; exit 126; fi; fi; '
    f'echo "{PGID_MARKER}$$"; '
    f'if [ "$sms_run" != - ]; then {RUN_MARKER}=$sms_run; export {RUN_MARKER}; '
    f'sms_d={_STATE}; sms_s="$sms_d/$sms_run"; '
    # the mode file says the folder is private: made here, or an older SMS's (0755) set once
    '{ [ -f "$sms_d/.0700" ] || '
    '{ mkdir -p -m 700 "$HOME/.sms" "$sms_d" && chmod 700 "$sms_d" && : > "$sms_d/.0700"; }; } && '
    'echo "$sms_run $$" > "$sms_s"; fi; '
    '"$@"; sms_rc=$?; [ "$0" = sms-setsid ] || [ "$sms_run" = - ] || rm -f "$sms_s"; exit $sms_rc'
)


def _launcher(shell: str, names: list[str]) -> str:
    """The channel's shell after the set-up: ``$0`` is the leader, then the run id, the folder to
    remove when nothing is left ('' for none), the done mark's nonce ('' for none), the command.
    ``names``: the run's variables, dropped once the leader has them."""
    drop = f"unset {' '.join(names)}; " if names else ""
    return (
        'sms_run=$1 sms_f=$2 sms_n=$3; shift 3; if command -v setsid >/dev/null 2>&1; then '
        f'setsid {shell} -c "$0" sms-setsid "$sms_run" "$@" & sms_p=$!; {drop}'
        f'wait $sms_p; sms_rc=$?; sms_s=; [ "$sms_run" = - ] || sms_s={_STATE}/$sms_run; '
        'if kill -0 -$sms_p 2>/dev/null || { [ -n "$sms_s" ] && '
        f'grep -q -a -F -e "{RUN_MARKER}=$sms_run" /proc/[0-9]*/environ 2>/dev/null; }}; '
        'then [ -z "$sms_s" ] || rm -f "$sms_s"; '
        'else { [ -z "$sms_s$sms_f" ] || rm -rf -- ${sms_s:+"$sms_s"} ${sms_f:+"$sms_f"}; } && '
        f"{{ [ -z \"$sms_n\" ] || printf '\\000{DONE_MARKER}%s\\n' \"$sms_n\"; }}; fi; exit $sms_rc; "
        f'else exec {shell} -c "$0" sms-job "$sms_run" "$@"; fi'
    )


def quote(word: str) -> str:
    """``word`` single-quoted for a POSIX shell so that it arrives byte for byte."""
    return shlex.quote(word)


def program_argv(plan: Plan) -> list[str]:
    """The argument vector of ``plan`` on a POSIX host, which runs "program" plans only."""
    if plan.kind != "program":
        raise InvalidInput(f"a {plan.kind} script runs on Windows hosts only")
    return plan.argv


def render(plan: Plan, shell: str = "/bin/sh", *, sent: str | None = None, folder: str | None = None,
           nonce: str = "") -> str:
    """The exec channel's command that runs ``plan`` in a new process group on a POSIX host; its
    stdin must be :func:`stdin_of` the plan.

    ``shell`` is the POSIX shell the launcher uses (``/usr/xpg4/bin/sh`` on old Solaris, say).
    The plan's variables are read from stdin with the ``read`` builtin and exported by the
    launcher, so the leader inherits them (its SMS_RUN_ID still wins); the launcher drops them
    again before its end-of-run check. ``sent``: the path the script that follows them on stdin is
    written to. ``folder``: removed with the state file when the launcher finds nothing of the
    run left, which then writes :func:`done_mark` of ``nonce``.
    """
    argv = " ".join(quote(w) for w in [plan.run_id or "-", folder or "", nonce, *program_argv(plan)])
    steps = []
    if plan.env:
        lines = env_text(plan.env).count("\n")
        steps.append(
            f'{{ sms_e= sms_i=0; while [ $sms_i -lt {lines} ]; do IFS= read -r sms_l || {{ echo "sms: the run\'s '
            'variables did not arrive" >&2; exit 126; }; sms_e="$sms_e$sms_l\n"; sms_i=$((sms_i + 1)); done; '
            'eval "$sms_e"; sms_e= sms_l=; }'
        )
    if sent is not None:
        folders = " ".join(quote(d) for d in _folders_of(sent))  # the subshell's fork is cat's
        steps.append(f"mkdir -p -m 700 {folders} && (umask 077 && exec cat > {quote(sent)})")
    if plan.cwd:
        steps.append(f"cd {quote(plan.cwd)}")
    body = " && ".join([*steps, f"{{ {_launcher(quote(shell), sorted(plan.env))}; }}"])
    return f"exec {quote(shell)} -c {quote(body)} {quote(_LEADER)} {argv}"


def stdin_of(plan: Plan, script: bytes = b"") -> bytes:
    """What the channel that :func:`render` s ``plan`` reads: its variables, then the script sent.

    >>> stdin_of(Plan(program=("sh",), script="/x.sh", env={"A": "two\\nlines"}), b"echo $A\\n")
    b"A='two\\nlines'\\nexport A\\necho $A\\n"
    """
    return env_text(plan.env).encode() + script


def _folders_of(path: str) -> list[str]:
    """The folders above ``path``, outermost first, "/" left out: ``mkdir -p -m 700`` of all of
    them makes each missing one mode 0700 (``-m`` sets only the last folder of each operand).

    >>> _folders_of("/h/.sms/run/r1/x.sh")
    ['/h', '/h/.sms', '/h/.sms/run', '/h/.sms/run/r1']
    """
    folder = posixpath.dirname(path)
    folders = []
    while folder not in ("/", ""):
        folders.append(folder)
        folder = posixpath.dirname(folder)
    return folders[::-1]


def done_mark(nonce: str) -> bytes:
    """The launcher's last bytes on stdout when it found nothing of the run left and tidied up."""
    return f"\0{DONE_MARKER}{nonce}\n".encode()


class DoneMark:
    """Takes :func:`done_mark` off the end of a stdout stream, holding back what may be its start
    until the next read shows it is not.

    >>> mark = DoneMark("ab12")
    >>> mark.take(b"out\\n\\0sms-do", ended=False), mark.take(b"ne:ab12\\n", ended=False)
    (b'out\\n', b'')
    >>> mark.take(b"", ended=True), mark.seen
    (b'', True)
    >>> other = DoneMark("ab12")
    >>> other.take(b"a\\0sm", ended=False), other.take(b"x\\n", ended=False), other.take(b"", ended=True)
    (b'a', b'\\x00smx\\n', b'')
    """

    def __init__(self, nonce: str) -> None:
        self.mark = done_mark(nonce)
        self.seen = False
        """Whether the stream ended with the mark (the launcher found nothing of the run left)."""
        self._held = b""

    def take(self, data: bytes, *, ended: bool) -> bytes:
        """The part of ``data`` (read after what was passed before) that is the script's output."""
        data, self._held = self._held + data, b""
        if ended:  # the reader may ask again after the end: what it saw stays
            self.seen = self.seen or data.endswith(self.mark)
            return data[: len(data) - len(self.mark)] if data.endswith(self.mark) else data
        start = data.rfind(b"\0", max(0, len(data) - len(self.mark)))
        if start >= 0 and self.mark.startswith(data[start:]):
            data, self._held = data[:start], data[start:]
        return data


def env_text(env: dict[str, str]) -> str:
    """The run's variables as ``sh`` code: each one assigned, single-quoted, and exported (names
    are plain names, :class:`~sms_plugin.transports.base.Plan` checks them).

    >>> print(env_text({"A": "it's", "B": "two words"}), end="")
    A='it'"'"'s'
    export A
    B='two words'
    export B
    """
    return "".join(f"{name}={quote(value)}\nexport {name}\n" for name, value in env.items())


def receive_line(path: str, mode: int = 0o700) -> str:
    """A shell line that writes its stdin to ``path`` with ``mode`` (missing folders made mode 0700),
    for a shell of its own: how SMS puts a file on a host, with no SFTP.

    >>> receive_line("/h/.sms/run/r1/x.sh")
    'umask 077 && mkdir -p /h/.sms/run/r1 && cat > /h/.sms/run/r1/x.sh && chmod 700 /h/.sms/run/r1/x.sh'
    >>> receive_line("/h/.sms/run/r1/.env", 0o600)
    'umask 077 && mkdir -p /h/.sms/run/r1 && cat > /h/.sms/run/r1/.env'
    """
    file, folder = quote(path), quote(posixpath.dirname(path))
    line = f"umask 077 && mkdir -p {folder} && cat > {file}"
    return line if mode == 0o600 else f"{line} && chmod {mode:o} {file}"


def remove_folder_line(path: str) -> str:
    """A shell line that removes ``path``, a file or a folder and what is in it (a run's uploads)."""
    return f"rm -rf -- {quote(path)}"


def signal_run_line(pgid: int | None, run_id: str | None, signal: str) -> str:
    """A shell line that sends ``signal`` (TERM, KILL or 0 to probe) to process group ``pgid``
    and to every process marked with ``run_id``; its exit status is 0 if any process got it.

    A probe spawns processes only where it may find something: ``ps`` only if ``kill -0`` (a
    builtin) finds the group, the marker scan (one ``grep``) only if the group is not alive.
    """
    if signal not in {"TERM", "KILL", "0"}:
        raise ValueError(f"unsupported signal {signal!r}")
    parts = ["f=1"]
    if pgid and signal == "0":  # a zombie (dead, not yet reaped) does not count as alive
        parts.append(
            f"kill -0 -{int(pgid)} 2>/dev/null && "
            f"ps -e -o pgid= -o stat= | awk '$1 == {int(pgid)} && $2 !~ /^Z/ {{ a = 1 }} END {{ exit !a }}' && f=0"
        )
    elif pgid:
        parts.append(f"kill -{signal} -{int(pgid)} 2>/dev/null && f=0")
    if run_id:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
            raise InvalidInput(f"unsafe run id {run_id!r}")
        scan = f"-a -F -e '{RUN_MARKER}={run_id}' /proc/[0-9]*/environ 2>/dev/null"
        if signal == "0":  # a zombie's environment is empty: it is not found
            parts.append(f"[ $f = 0 ] || {{ grep -q {scan} && f=0; }}")
        else:
            parts.append(f"for p in $(grep -l {scan}); "
                         f"do p=${{p#/proc/}}; p=${{p%/environ}}; kill -{signal} $p 2>/dev/null && f=0; done")
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
