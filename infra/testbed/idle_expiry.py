"""What WinRM does with a shell nobody asked anything of for its idle time-out: it ends it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Protocol, TypeVar


class Idles(Protocol):
    idle_seconds: float
    last_used: float


T = TypeVar("T", bound=Idles)


def start_expiry(lock: threading.Lock, items: MutableMapping[str, T], end: Callable[[T], None]) -> None:
    """Starts a daemon thread that, every second, removes from ``items`` (under ``lock``) those
    unused for longer than their ``idle_seconds`` and calls ``end`` on each."""

    def expire() -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with lock:
                idle = [key for key, item in items.items() if now - item.last_used > item.idle_seconds]
                ended = [items.pop(key) for key in idle]
            for item in ended:
                end(item)

    threading.Thread(target=expire, name="winrm-idle-expiry", daemon=True).start()
