"""Shared file helpers below every other module: content hashing, safe names, the modes of what
we create.  Imports nothing from astrowatch, so ingest, review, delivery and publish can all
use it without importing each other.

Modes: astrowatch runs as a service user whose group holds the reviewers and the upstream app
(``UMask=0002``, setgid data folder).  Whatever it creates must honour the process umask like
``open()`` and ``mkdir()`` do: files ``0666 & ~umask``, folders ``0777 & ~umask``.
``tempfile.mkstemp`` creates ``0600`` whatever the umask, so atomic writes chmod the temp file
to :func:`file_mode` before the rename.  Secrets never go through these helpers.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from pathlib import Path

_umask: int | None = None
_umask_lock = threading.Lock()


def _read_umask() -> int:
    """The process umask without changing it when the kernel says it (Linux >= 4.7); otherwise
    the set-and-restore dance, under a lock (only this module ever changes the umask)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def process_umask() -> int:
    """The umask, read once (the daemon and the CLI call this at start, before any thread)."""
    global _umask
    if _umask is None:
        with _umask_lock:
            if _umask is None:
                _umask = _read_umask()
    return _umask


def file_mode() -> int:
    """What ``open(path, "w")`` would create: ``0666 & ~umask``."""
    return 0o666 & ~process_umask()


def dir_mode() -> int:
    return 0o777 & ~process_umask()


def write_new_file(fd: int, data: bytes) -> None:
    """Fill the new file open at ``fd`` (closed after) with ``data``, give it :func:`file_mode`
    (a temp file is made ``0600``: the group must read what we write) and fsync it."""
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), file_mode())
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_display_name(name: str) -> str:
    """A name that can be written to disk, for files whose own name is not safe."""
    cleaned = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)
    cleaned = cleaned.encode("utf-8", "replace").decode("utf-8")[:120].strip(". ") or "unnamed"
    return cleaned


# -- a tree the service's group shares ------------------------------------------------------------
GROUP_DIR_BITS = stat.S_ISGID | 0o070  # setgid (new entries keep the group) + group rwx
GROUP_FILE_BITS = 0o060


def share_fd_with_group(fd: int, *, readonly: bool = False) -> None:
    """Give the group what the owner has on the folder or file open on ``fd`` (rwx + setgid on a
    folder; read-only when asked, for folders the group must read but never change), whatever the
    umask.  By descriptor: a name swapped for a symlink meanwhile cannot redirect the chmod.  Only
    the owner (or root) may chmod: the caller decides where that is expected."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        mode |= stat.S_ISGID | (0o050 if readonly else 0o070)
        if readonly:
            mode &= ~0o020
    else:
        mode |= 0o040 if readonly else GROUP_FILE_BITS
    if mode != stat.S_IMODE(st.st_mode):
        os.fchmod(fd, mode)


# POSIX default ACL (the ``system.posix_acl_default`` xattr, version 2): owner rwx, group rwx,
# others r-x.  With a default ACL the kernel ignores the creator's umask, so whatever another uid
# (the upstream app under umask 0022) creates below keeps the group's write bit and the ACL.
_ACL_XATTR = "system.posix_acl_default"
_ACL_ENTRIES = ((0x01, 7), (0x04, 7), (0x20, 5))  # ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER


def set_group_default_acl(path: Path | int) -> bool:
    """Make everything later created under ``path`` group-writable whatever its creator's umask.
    False where the filesystem or platform has no POSIX ACLs (then the creators' umask decides).
    ``path`` may be a descriptor (a folder opened without following links)."""
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in _ACL_ENTRIES)
    try:
        os.setxattr(path, _ACL_XATTR, value)
    except (AttributeError, OSError):
        return False
    return True


def has_group_default_acl(path: Path) -> bool:
    try:
        value = os.getxattr(path, _ACL_XATTR)
    except (AttributeError, OSError):
        return False
    entries = {struct.unpack_from("<HH", value, 4 + 8 * i) for i in range((len(value) - 4) // 8)}
    return (0x04, 7) in entries
