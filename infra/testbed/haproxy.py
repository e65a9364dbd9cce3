"""HAProxy from Debian's ``haproxy`` package, started with a configuration text of the caller's."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from infra.testbed.process import ManagedProcess, PeerError, find_binary, run

_BIND = re.compile(r"^\s*bind\s+([0-9.]+):(\d+)", re.MULTILINE)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


class HAProxy:
    """``haproxy -f <workdir>/haproxy.cfg`` in the foreground; ``start()`` checks the configuration
    (``haproxy -c``) and waits until every ``bind`` address of it accepts connections.

    Example::

        proxy = HAProxy(config_text, tmp_path).start()
        ...
        proxy.stop()
    """

    def __init__(self, config_text: str, workdir: Path, *, timeout: float = 20.0) -> None:
        self.config_text = config_text
        self.workdir = workdir
        self.timeout = timeout
        self.process: ManagedProcess | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> HAProxy:
        """Check the configuration, start HAProxy and wait until its frontends listen; returns itself."""
        binary = find_binary("haproxy")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        run([binary, "-c", "-q", "-f", str(self.config_path)])
        binds = [(host, int(port)) for host, port in _BIND.findall(self.config_text)]
        if not binds:
            raise PeerError("the HAProxy configuration binds no address")
        self.process = ManagedProcess([binary, "-W", "-db", "-f", str(self.config_path)], self.log_path, cwd=self.workdir)
        self.process.start()
        try:
            self.process.wait_ready(lambda: all(_listening(*bind) for bind in binds), self.timeout, "haproxy")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None
