"""The systemd notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

No libsystemd: sd_notify(3) is a `KEY=VALUE` datagram on a unix socket whose address systemd
puts in NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). Outside systemd every
call is a no-op. The watchdog (WatchdogSec= in the unit) wants `WATCHDOG=1` at least every
WATCHDOG_USEC; `Watchdog` pings at half of it, and only when the caller reports progress, so
a loop that hangs stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from retrofit_agent.common.logs import kv

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to `address` (None: not under systemd, nothing is sent)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failing = False  # log a failure once, not for every message
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)  # a backed-up receiver must never stall the loop

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        return cls(environ.get("NOTIFY_SOCKET") or None)

    def send(self, *fields: str) -> bool:
        """Send `fields` (each `KEY=VALUE`) as one message; False if it could not be sent."""
        if self._socket is None or self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._socket.sendto("\n".join(fields).encode(), target)
        except OSError as exc:  # systemd gone, busy or not ours: the agent runs on regardless
            if not self._failing:
                log.debug("notify failed", extra=kv(socket=self.address, error=exc))
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Watchdog:
    """`WATCHDOG=1` at half the interval systemd asked for, only on reported progress."""

    def __init__(
        self,
        notifier: Notifier,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.timeout_s = _watchdog_timeout_s(environ)
        self._notifier = notifier
        self._clock = clock
        self._last: float | None = None

    def progress(self) -> None:
        """The loop made progress: ping if half the timeout has passed since the last ping."""
        if self.timeout_s is None:
            return
        now = self._clock()
        due = self._last is None or now - self._last >= self.timeout_s / 2
        if due and self._notifier.send("WATCHDOG=1"):
            self._last = now


def _watchdog_timeout_s(environ: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, if systemd set it for this process (WATCHDOG_PID)."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
