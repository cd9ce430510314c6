"""Start-up progress: a live spinner on an interactive terminal, systemd's STATUS, and more start time from systemd
while loading and filling make progress (a hung load stops asking, and TimeoutStartSec then ends it)."""
from __future__ import annotations

import sys

from .sdnotify import Notifier


class StartupProgress:
    def __init__(self, notifier: Notifier, spinner: bool):
        self.notifier = notifier
        self._status = None
        if spinner and sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status("starting the engine")
            self._status.start()

    def update(self, msg: str, tick_s: float = 0.0) -> None:
        if self._status is not None and msg:
            self._status.update(msg)
        self.notifier.status(msg)
        self.notifier.extend_timeout(max(120.0, 4 * tick_s))

    def end(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
