"""A private HAProxy (Debian's ``haproxy``) running a configuration its caller writes.

Generic: the caller's module writes the config text (frontends, backends, TLS); this launcher
checks it (``haproxy -c``), runs it in the foreground with its log in ``workdir``, and waits
until every ``bind`` address of the text accepts connections.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from infra.testbed.process import ManagedProcess, find_binary, run

_BIND = re.compile(r"^\s*bind\s+([0-9.]+):([0-9]+)", re.MULTILINE)


class HAProxy:
    """``haproxy -db -f <workdir>/haproxy.cfg``; ``start()`` waits for its frontends, ``stop()`` ends it.

    Example::

        proxy = HAProxy(config_text, tmp_path).start()
        ...
        proxy.stop()
    """

    def __init__(self, config_text: str, workdir: Path, *, timeout: float = 15.0) -> None:
        self.config_text = config_text
        self.workdir = workdir
        self.timeout = timeout
        self.process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def binds(self) -> list[tuple[str, int]]:
        """The ``bind`` addresses of the config text."""
        return [(host, int(port)) for host, port in _BIND.findall(self.config_text)]

    def start(self) -> HAProxy:
        """Check the config, start HAProxy and wait until its frontends listen (PeerError if not)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "haproxy.cfg"
        config.write_text(self.config_text)
        haproxy = find_binary("haproxy")
        run([haproxy, "-c", "-q", "-f", str(config)])
        self.process = ManagedProcess([haproxy, "-db", "-f", str(config)], self.workdir / "haproxy.log", cwd=self.workdir)
        self.process.start()
        try:
            self.process.wait_ready(self._listening, self.timeout, "haproxy")
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        for address in self.binds:
            with socket.create_connection(address, timeout=1):
                pass
        return True

    def stop(self) -> None:
        """Stop HAProxy (safe to call twice)."""
        if self.process is not None:
            self.process.stop(5.0)
            self.process = None
