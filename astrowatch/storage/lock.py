"""One daemon per data folder: an ``fcntl`` lock on ``state/daemon.lock`` held for the daemon's life.

The kernel drops the lock when the process exits, however it exits (SIGKILL included), so a
stale lock file never blocks a restart.  The holder writes its PID into the file so a second
``run`` or ``drain`` can name it.  One-shot commands (``status``, ``review``...) never take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from astrowatch.core.errors import AccessDenied, AlreadyRunning

LOCK_NAME = "daemon.lock"


class DaemonLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> DaemonLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # 0644: the group may read the PID, only the service user may open it to lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise AccessDenied(f"cannot open {self.path}", hint="run the daemon as the data folder's "
                               "owner (the service user), e.g. sudo -u astrowatch astrowatch run") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another astrowatch daemon{f' (pid {pid})' if pid else ''} already runs on "
                f"{self.path.parent.parent}",
                hint="stop it first (systemctl stop astrowatch); status, review and stats work beside it",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None

