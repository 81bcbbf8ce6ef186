"""systemd ``sd_notify`` without a dependency: one datagram to ``$NOTIFY_SOCKET``.

Errors are logged, not swallowed silently (the ``sdnotify`` package hides them).  Without
``NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("astrowatch.notify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        self.watchdog_seconds: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # a stalled reader must never freeze the daemon
            self._sock.sendto("\n".join(fields).encode("utf-8"), addr)
            return True
        except BlockingIOError:
            log.debug("sd_notify queue full; message dropped", message=fields[0])
            return False
        except OSError as exc:
            log.warning("sd_notify failed", socket=self.address, error=str(exc))
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
