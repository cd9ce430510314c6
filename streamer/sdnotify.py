"""systemd service notification (sd_notify(3)) without libsystemd.

    notifier = Notifier.from_env()
    notifier.ready("streaming block 0")     # READY=1 + STATUS=...
    notifier.watchdog()                     # every notifier.watchdog_interval() seconds
    notifier.stopping()

Outside systemd (no NOTIFY_SOCKET) every call is a no-op returning False. Send errors are logged, never
raised: a broken notification socket must not take the stream down (systemd's watchdog will notice).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None, watchdog_usec: int | None = None):
        """address: a socket path, or "@name" for an abstract socket; None disables notifications.
        watchdog_usec: the service's WatchdogSec in microseconds (None: no watchdog)."""
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self.pings = 0  # WATCHDOG=1 sent
        self.checks = 0  # health checks of watchdog_loop

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, unset: bool = False) -> "Notifier":
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. WATCHDOG_PID, when set, must be this process.
        unset=True removes the variables from os.environ so child processes (engine ranks) do not notify."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec = None
        raw_usec = env.get("WATCHDOG_USEC", "").strip()
        raw_pid = env.get("WATCHDOG_PID", "").strip()
        if raw_usec:
            try:
                usec = int(raw_usec)
            except ValueError:
                log.warning("sdnotify: ignoring bad WATCHDOG_USEC=%r", raw_usec)
        if usec and raw_pid:
            try:
                if int(raw_pid) != os.getpid():
                    usec = None  # the watchdog belongs to another process
            except ValueError:
                usec = None
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of WATCHDOG_USEC, or None without a watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send "KEY=value" lines in one datagram. True when sent."""
        if self.address is None or not fields:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, target)
            return True
        except OSError as e:
            log.warning("sdnotify: cannot notify %s: %s", self.address, e)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        self.pings += 1
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (EXTEND_TIMEOUT_USEC), e.g. while a large model loads."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    async def watchdog_loop(self, healthy: Callable[[], bool], check_every: float = 1.0) -> None:
        """Call healthy() every `check_every` seconds (and at least once per watchdog interval) and ping the
        watchdog, once per interval, only while it returns True, so that systemd restarts a daemon that stopped
        producing. Also runs without a watchdog (healthy() may log). Cancel to stop."""
        interval = self.watchdog_interval()
        step = check_every if interval is None else min(check_every, interval)
        last_ping = None
        while True:
            ok = healthy()
            self.checks += 1
            now = time.monotonic()
            if ok and interval is not None and (last_ping is None or now - last_ping >= interval - step / 2):
                self.watchdog()
                last_ping = now
            await asyncio.sleep(step)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
