"""Wine's ``cmd.exe`` as the command interpreter of the loopback WinRM test host.

One Wine prefix per machine, made on first use in ``~/.cache/sms-testbed/wineprefix`` (about
700 MB, outside the clone) and reused by every session. Commands run headless (``DISPLAY``
unset, ``WINEDEBUG=-all``) in a Linux session of their own: Wine starts every Windows process as
a Linux process that stays in that process group (even when re-parented to init), so killing the
group ends the whole Windows process tree — the test host's stand-in for the job object that
WinRS puts a shell's processes in. Wine 8 has no ``tasklist`` and its ``taskkill`` has no ``/T``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PREFIX = Path.home() / ".cache" / "sms-testbed" / "wineprefix"
_WINE_CANDIDATES = ("wine", "wine-stable")


def wine_binary() -> str:
    """The ``wine`` launcher (Debian names it ``wine-stable`` when only wine64 is installed)."""
    for name in _WINE_CANDIDATES:
        if found := shutil.which(name):
            return found
    raise RuntimeError("wine is not installed (Debian package `wine`; run infra/bootstrap.sh as root)")


def environment(prefix: Path = PREFIX) -> dict[str, str]:
    """The environment Wine runs with: private prefix, no debug output, no display, no Mono/Gecko."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    return env


def ensure_prefix(prefix: Path = PREFIX, timeout: float = 300) -> None:
    """Creates the Wine prefix once (the first ``cmd /c`` makes it); later calls return at once."""
    if (prefix / "system.reg").exists() and (prefix / "drive_c" / "windows" / "system32").is_dir():
        return
    prefix.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [wine_binary(), "cmd", "/c", "echo", "ready"],
        env=environment(prefix), capture_output=True, timeout=timeout, check=False,
    )
    if b"ready" not in done.stdout:
        raise RuntimeError(f"wine could not create its prefix {prefix}: {done.stderr.decode(errors='replace')[-500:]}")


def unix_path(windows_path: str, prefix: Path = PREFIX) -> Path:
    """The Linux path of a Windows path under Wine (``C:\\x`` → ``prefix/dosdevices/c:/x``).

    Components are matched case-insensitively, as Windows does.
    """
    drive, _, rest = windows_path.replace("/", "\\").partition(":")
    if len(drive) != 1 or not rest.startswith("\\"):
        raise ValueError(f"not an absolute Windows path: {windows_path!r}")
    path = (prefix / "dosdevices" / f"{drive.lower()}:").resolve()
    for part in filter(None, rest.split("\\")):
        if part in (".", ".."):
            raise ValueError(f"relative component in {windows_path!r}")
        exact = path / part
        if not exact.exists() and path.is_dir():
            exact = next((child for child in path.iterdir() if child.name.lower() == part.lower()), exact)
        path = exact
    return path


def windows_path(path: Path) -> str:
    """A Linux path as Wine sees it on drive Z: (``/tmp/x`` → ``Z:\\tmp\\x``)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def start_cmd(line: str, workdir: Path, extra_env: dict[str, str], prefix: Path = PREFIX) -> subprocess.Popen[bytes]:
    """Runs one command line through Wine's real ``cmd.exe``, stdout and stderr piped.

    Wine re-quotes its Unix arguments when it builds the Windows command line (``"`` becomes
    ``\\"``), so the line is written to a one-line batch file (``@`` + line) that ``cmd /c`` runs:
    cmd.exe itself then parses the line, quotes and ``&|<>`` included. Difference from a typed
    line: ``%`` is read with batch-file rules.
    """
    runner = workdir / f"line-{os.urandom(6).hex()}.bat"
    runner.write_bytes(b"@" + line.encode("utf-8") + b"\r\n")
    return subprocess.Popen(
        [wine_binary(), "cmd", "/c", windows_path(runner)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**environment(prefix), **extra_env}, cwd=workdir, start_new_session=True,
    )
