"""Which environment variables and arguments a run may carry: the one list, kept as data.

A name must match ``[A-Za-z_][A-Za-z0-9_]*`` and must not be one that an interpreter, the
dynamic loader or SMS itself reads at start-up, whatever a script declares: such a variable runs
code before the approved script does (``BASH_ENV``, ``PYTHONSTARTUP``, ``LD_PRELOAD``...) or
changes how the launcher works (``PATH``, ``IFS``, ``SMS_RUN_ID``). Names are compared in upper
case (Windows treats ``ComSpec`` and ``COMSPEC`` alike). Values and arguments must be UTF-8 text
without NUL, which no POSIX ``execve`` can carry. Reasons per name: docs/catalog.md.

>>> env_name_problem("REPORT_DIR") is None
True
>>> env_name_problem("bash_env")
"'bash_env' is read at start-up by bash (BASH_ENV)"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sms_plugin.errors import InvalidInput

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Exact names (upper case) and who reads them.
FORBIDDEN_NAMES: dict[str, str] = {
    "BASH_ENV": "bash", "ENV": "sh and ksh", "SHELLOPTS": "bash", "BASHOPTS": "bash",
    "PS1": "the shells", "PS2": "the shells", "PS3": "the shells", "PS4": "the shells",
    "PROMPT_COMMAND": "bash", "IFS": "the shells", "CDPATH": "the shells", "GLOBIGNORE": "bash",
    "EXECIGNORE": "bash", "BASH_XTRACEFD": "bash", "BASH_LOADABLES_PATH": "bash", "FPATH": "ksh",
    "PERL5OPT": "perl", "PERL5LIB": "perl", "PERLLIB": "perl", "PERL5DB": "perl",
    "RUBYOPT": "ruby", "RUBYLIB": "ruby", "NODE_OPTIONS": "node", "NODE_PATH": "node",
    "JAVA_TOOL_OPTIONS": "the JVM", "_JAVA_OPTIONS": "the JVM",
    "GCONV_PATH": "the C library", "GLIBC_TUNABLES": "the C library", "LOCPATH": "the C library",
    "NLSPATH": "the C library", "HOSTALIASES": "the resolver", "RESOLV_HOST_CONF": "the resolver",
    "PATH": "the launcher (which program runs)", "HOME": "the launcher (state and upload folders)",
    "SHELL": "the launcher", "TMPDIR": "the launcher and mktemp", "USER": "the login", "LOGNAME": "the login",
    "PSMODULEPATH": "PowerShell", "PSEXECUTIONPOLICYPREFERENCE": "PowerShell", "__PSLOCKDOWNPOLICY": "PowerShell",
    "COMSPEC": "cmd.exe", "PATHEXT": "cmd.exe", "SYSTEMROOT": "Windows", "WINDIR": "Windows",
}

#: Prefixes (upper case) and who reads names that start with them.
FORBIDDEN_PREFIXES: dict[str, str] = {
    "BASH_FUNC_": "bash (exported functions)",
    "PYTHON": "python",
    "LD_": "the dynamic loader",
    "DYLD_": "the dynamic loader",
    "MALLOC_": "the C library",
    "SMS_": "SMS itself (its run marker and settings)",
}


SECRET_PREFIX = "SMS_SECRET_"
"""The one family of SMS_ names SMS itself gives a script: its secret parameters (sms_plugin.parameters)."""


def env_name_problem(name: str, *, sms_sets: bool = False) -> str | None:
    """Why ``name`` may not be set by a run, or None if it may. With ``sms_sets`` (what the
    transports check) the secret parameters SMS itself passes (``SMS_SECRET_*``) are allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return f"{name!r} is not a variable name: use letters, digits and '_', not starting with a digit"
    upper = name.upper()
    if sms_sets and name.startswith(SECRET_PREFIX):
        return None
    if upper in FORBIDDEN_NAMES:
        return f"{name!r} is read at start-up by {FORBIDDEN_NAMES[upper]} ({upper})"
    for prefix, reader in FORBIDDEN_PREFIXES.items():
        if upper.startswith(prefix):
            return f"{name!r} is read at start-up by {reader} ({prefix}*)"
    return None


def check_env_names(names: Iterable[str], *, sms_sets: bool = False) -> None:
    """InvalidInput naming every name a run may not set."""
    problems = [problem for name in names if (problem := env_name_problem(name, sms_sets=sms_sets))]
    if problems:
        raise InvalidInput("environment refused: " + "; ".join(problems))


def check_env(env: Mapping[str, str], *, sms_sets: bool = False) -> None:
    """InvalidInput for a forbidden name or a value holding NUL."""
    check_env_names(env, sms_sets=sms_sets)
    check_words(env.values(), "environment value")


def check_words(words: Iterable[str], what: str = "argument") -> None:
    """InvalidInput if any of ``words`` is not text that a host can receive: a string, without
    NUL, that encodes as UTF-8 (a lone surrogate does not)."""
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise InvalidInput(f"{what} {index + 1} must be text, not {type(word).__name__}")
        if "\0" in word:
            raise InvalidInput(f"{what} {index + 1} contains a NUL byte, which no program can receive")
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{what} {index + 1} is not valid Unicode text (a lone surrogate)") from None
