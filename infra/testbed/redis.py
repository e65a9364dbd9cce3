"""A private Redis server from Debian's ``redis-server`` package on a loopback port."""

from __future__ import annotations

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, find_binary, run


class Redis(Peer):
    """``redis-server`` with its append-only file in the peer's folder, so that ``halt()`` then
    ``resume()`` (a restart) keeps the streams Prefect's messaging left in it.

    Example::

        with Redis() as redis:
            redis.url  # redis://127.0.0.1:PORT/0
    """

    name = "redis"

    def __init__(self, *, port: int = 0, timeout: float = 20.0) -> None:
        super().__init__(timeout=timeout)
        self.port = port

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def _start(self) -> None:
        self.port = self.port or free_port()
        self.resume()

    def resume(self) -> None:
        """Start the server (again) on the same port and data."""
        assert self.tmp is not None
        argv = [
            find_binary("redis-server"),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.tmp),
            "--appendonly", "yes",
            "--save", "",
            "--protected-mode", "no",
        ]
        self.spawn(argv, self._ready)

    def _ready(self) -> bool:
        answer = run(["redis-cli", "-h", self.host, "-p", str(self.port), "ping"], check=False, timeout=5)
        return answer.strip() == "PONG"
