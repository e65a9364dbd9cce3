"""``sms logs``: read a run's log or search all runs' output; ``sms log-shipper``: the delivery
service (docs/logs.md).

``sms logs RUN_ID`` is short for ``sms logs show RUN_ID``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from sms_plugin.cli.console import console
from sms_plugin.errors import SMSError
from sms_plugin.lazy import lazy_module

if TYPE_CHECKING:
    import asyncio

    from sms_plugin import settings
    from sms_plugin.cli import backend
    from sms_plugin.run_results import LogLine
    from sms_plugin.telemetry.logs import reader
else:  # loaded when a verb runs
    asyncio = lazy_module("asyncio")
    backend = lazy_module("sms_plugin.cli.backend")
    settings = lazy_module("sms_plugin.settings")
    reader = lazy_module("sms_plugin.telemetry.logs.reader")


class _ShowByDefault(TyperGroup):
    """Arguments that do not start with a sub-command name go to ``show``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


logs_app = typer.Typer(
    cls=_ShowByDefault,
    help="A run's log (`sms logs RUN_ID [--follow]`), or a search across runs (`sms logs search`).",
    no_args_is_help=True,
)
out = Console(highlight=False)
err = console(stderr=True, highlight=False)


TailOption = Annotated[
    int | None, typer.Option("--tail", metavar="N", min=0, help="Only the last N lines (stderr says how many were left out).")
]
SplitStderrOption = Annotated[
    bool, typer.Option("--split-stderr", help="The script's stderr on stderr (default: with stdout, in order).")
]


def print_output(lines: Iterable[LogLine], run_id: str, *, tail: int | None, split_stderr: bool) -> None:
    """Writes a run's output as the script wrote it (:mod:`sms_plugin.cli.script_output`); says on
    stderr how many lines ``tail`` left out."""
    from sms_plugin.cli.script_output import ScriptOutput

    notes = console(stderr=True, highlight=False) if sys.stderr.isatty() else None
    printer = ScriptOutput(tail=tail, split_stderr=split_stderr, notes=notes)
    for line in lines:
        printer.add(line)
    left_out = printer.finish()
    if left_out:
        err.print(f"sms: {left_out} earlier line(s) left out; `sms logs {run_id}` prints them all",
                  markup=False, highlight=False, soft_wrap=True)


@logs_app.command("show")
def show(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Only this host's lines (a fleet run).")] = None,
    tail: TailOption = None,
    split_stderr: SplitStderrOption = False,
) -> None:
    """Print a run's output, byte for byte as the script wrote it (docs/cli.md): from Elasticsearch
    when SMS_ELASTICSEARCH_URL is set (every line), else from Prefect's run log."""
    print_output(backend.current().logs(run_id, follow=follow, host=host), run_id, tail=tail, split_stderr=split_stderr)


@logs_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help='Words all required; "a phrase", -excluded, a|b, prefix*.')],
    script: Annotated[str | None, typer.Option("--script", "-s", help="Only this script's runs.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only lines this recent: 30s, 15m, 1h, 7d, 2w.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many lines.")] = 100,
) -> None:
    """Search the output of all runs in Elasticsearch, newest line first."""
    if not isinstance(backend.current(), backend.LocalBackend):
        raise SMSError("`sms logs search` is not available through the gateway; use `sms --local logs search` on the server")
    if not settings.current().logs.elasticsearch_url:
        raise SMSError("searching needs Elasticsearch: set SMS_ELASTICSEARCH_URL")

    async def print_matches() -> None:
        async for entry in reader.search(query, script=script, run_id=run_id, since=since, limit=limit):
            out.print(
                f"{entry.timestamp:%Y-%m-%d %H:%M:%S} {entry.script} {entry.run_id} "
                f"{entry.stream}:{entry.line} {entry.message}",
                markup=False,
                soft_wrap=True,
            )

    asyncio.run(print_matches())


def log_shipper() -> None:
    """Deliver spooled script output to Elasticsearch and apply the retention, until stopped.

    Needed for lines that the run could not deliver itself (Elasticsearch down or slow when the
    run ended, a crashed flow process); `sms up` starts it when SMS_ELASTICSEARCH_URL is set.
    """
    from sms_plugin.telemetry.logs.delivery import serve

    if not settings.current().logs.elasticsearch_url:
        raise SMSError("the log shipper needs SMS_ELASTICSEARCH_URL")
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    service_log = logging.getLogger("sms_plugin.telemetry.logs")
    service_log.addHandler(console)
    service_log.setLevel(logging.INFO)
    service_log.propagate = False
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)  # one warning per failed request
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serve(stop)


def register(app: Any) -> None:
    """Add ``logs`` and ``log-shipper`` to the ``sms`` command."""
    app.add_typer(logs_app, name="logs")
    app.command("log-shipper")(log_shipper)
