"""The ledger opened read-only, for the commands a reviewer runs (``status``, ``review``, ``stats``,
``ui``).

Reviewers are in the service's group but do not own ``state/``: they can read the ledger, never
write it, and must never create its ``-wal``/``-shm`` files (the daemon could not write files
they own).  So this opens ``file:...?mode=ro``: while the daemon runs, its WAL files exist and
SQLite reads through them.  When no daemon runs, the last connection has folded the WAL back into
the database and removed it; a read-only open would then have to create them (as the reviewer,
so the daemon could not write them later), so the database is read as ``immutable`` (nothing
writes it then) -- kept while the file stays as it was, and reopened at the next query once a
WAL appears or the file changes (the daemon started, or ran and stopped, meanwhile).  Opening costs
a few hundred microseconds, so a ``/metrics`` scrape of a dozen queries on a stopped daemon's
ledger must not open it a dozen times.  Every failure is an :class:`AstrowatchError` with a hint.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from astrowatch.core.errors import AccessDenied, LedgerError, NotFound
from astrowatch.storage.ledger import Ledger

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.storage.layout import Layout

GROUP_HINT = ("reviewers need to be in the service's group (check with 'id'; after 'usermod -aG' log in "
              "again) and the data folder must be group-readable: run 'astrowatch doctor'")


class ReadOnlyLedger(Ledger):
    """The read methods of :class:`Ledger` on a connection that cannot write."""

    def __init__(self, path: Path) -> None:  # no super().__init__: it would create the schema
        self.path = Path(path)
        self._local = threading.local()
        if not self.path.exists():
            raise NotFound(f"no ledger at {self.path}",
                           hint="the daemon has never run on this data folder, or data_dir points elsewhere")
        self._conn().execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        snapshot = getattr(self._local, "snapshot", None)  # the file as the immutable connection found it
        if conn is not None and snapshot is not None and _stamp(self.path) != snapshot:
            conn.close()  # a stopped daemon's ledger has changed, or a daemon runs now: look again
            conn = None
        if conn is None:
            stamp = _stamp(self.path)
            conn, immutable = _connect(self.path)
            self._local.conn, self._local.snapshot = conn, stamp if immutable else None
        return conn


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What says that an unlocked (immutable) read of the ledger still sees the file as it is: no
    WAL beside it, and the same inode, size and modification time.  None: a WAL is there."""
    if path.with_name(path.name + "-wal").exists():
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    # Without a WAL (no daemon has the ledger open) a normal open would create -wal/-shm files
    # owned by us, which the daemon could not write: read the file as it is instead.
    if wal.exists():
        try:
            return _probe(f"{uri}?mode=ro"), False
        except sqlite3.OperationalError as exc:
            if not os.access(path, os.R_OK) or wal.exists():
                raise AccessDenied(f"cannot read the ledger {path} ({exc})", hint=GROUP_HINT) from None
    if not os.access(path, os.R_OK):
        raise AccessDenied(f"cannot read the ledger {path}", hint=GROUP_HINT)
    try:
        return _probe(f"{uri}?mode=ro&immutable=1"), True
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}",
                          hint="run 'astrowatch doctor'; if a daemon just started, try again") from None


def _probe(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=True)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone()  # reads the schema and a page: fails here if it cannot
    except BaseException:
        conn.close()
        raise
    return conn


def open_for_reading(layout: Layout) -> ReadOnlyLedger:
    """The read-only ledger of a data folder (raises NotFound when the daemon never ran there)."""
    return ReadOnlyLedger(layout.ledger_path)
