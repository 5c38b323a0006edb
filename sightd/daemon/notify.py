"""systemd's sd_notify protocol by hand: one datagram per state change, no libsystemd needed.

Under `Type=notify` systemd sets NOTIFY_SOCKET (a path, or '@name' for an abstract socket);
anywhere else it is unset and every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("sightd.daemon")


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send e.g. "READY=1" to systemd; False when not under systemd or the send failed."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a reader that fell behind must not stall the supervisor
            sock.connect(address)
            sock.send(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify %r to %s failed: %s", message, address, exc)
        return False


class Watchdog:
    """Feeds systemd's watchdog (WatchdogSec) only while labels flow, at half its period.

    A pipeline that is up but labels nothing (camera unplugged, worker hung) stops the
    pings, so systemd restarts the whole service: the last line of defence.
    """

    def __init__(self, environ: dict[str, str] | None = None):
        env = environ if environ is not None else os.environ
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.period = int(usec) / 2e6 if enabled else None
        self._environ = environ
        self._last_ping = 0.0
        self._fresh = False

    def saw_label(self) -> None:
        self._fresh = True

    def tick(self) -> None:
        """Call often; pings when a label arrived since the last ping and half a period passed."""
        if self.period is None or not self._fresh:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.period:
            notify("WATCHDOG=1", self._environ)
            self._last_ping, self._fresh = now, False
