"""The shared tree, read and written without trusting it (see ``docs/security.md``).

Every member of the service's group can create, rename and replace anything in ``Utilisateurs/``,
``inbox/``, ``approved/``, ``rejected/`` and ``redo/`` between two of our system calls.  So:

**Reading.** :func:`open_file` walks from the data root one component at a time with
``O_DIRECTORY | O_NOFOLLOW`` (a symlinked folder fails), opens the last name with
``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`` relative to its parent (a symlink fails, a FIFO returns at
once), ``fstat``\\ s the descriptor and accepts only a regular file with one link, of at most the
bound its kind allows and -- when the caller saw it before -- the same ``(st_dev, st_ino)``.
Everything after (hash, decode, snapshot) works on that descriptor, never on the name again.
Anything else raises :class:`Unreadable` ("missing or unreadable", with the reason).

**Writing.** :func:`ensure_dir` creates and enters folders the same way, relative to directory
descriptors; a symlink, FIFO or plain file where a folder belongs is renamed aside to a visible
``<name>.quarantined-<time>`` and logged, then the folder is made.  :func:`write_bytes`,
:func:`rename`, :func:`link` and :func:`unlink` act relative to those descriptors, so nothing is
ever written outside the data root whatever the tree holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from astrowatch.core.errors import InputError, UnsafePathError
from astrowatch.storage.files import dir_mode, file_mode, write_new_file

log = structlog.get_logger("astrowatch.safefs")

Identity = tuple[int, int]  # (st_dev, st_ino): what a stability check saw

SIDECAR_MAX_BYTES = 1 << 20  # a result's .json sidecar
CAPTION_MAX_BYTES = 64 << 10  # a caption .txt, an .error.txt
NOTE_MAX_BYTES = 64 << 10

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)  # EMLINK: O_NOFOLLOW on a link (FreeBSD)


class Unreadable(InputError):
    """A shared-tree file that is missing or that we refuse to read; ``gone`` when it is simply
    not there (a rename raced us), else the message says why (symlink, FIFO, too big...)."""

    def __init__(self, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino)


def _parts(path: Path, root: Path) -> tuple[str, ...]:
    """``path``'s components below ``root`` (both absolute; ``root`` already resolved)."""
    try:
        parts = Path(os.path.abspath(path)).relative_to(root).parts
    except ValueError:
        raise UnsafePathError(f"{path} is outside the data folder {root}") from None
    if ".." in parts:
        raise UnsafePathError(f"{path} is outside the data folder {root}")
    return parts


def _show(path: object) -> str:
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


# -- reading --------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_dir(path: Path, root: Path) -> Iterator[int]:
    """A descriptor on folder ``path`` under ``root``, reached without following any link below
    ``root`` (``root`` itself is the operator's choice and may sit under a symlink)."""
    try:
        fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        raise Unreadable(f"{_show(path)}: the data folder {_show(root)} is missing", gone=True) from None
    try:
        for part in _parts(path, root):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise Unreadable(f"{_show(path)}: folder {part!r} is missing", gone=True) from None
            except OSError as exc:
                if exc.errno in _NOT_A_FOLDER:
                    raise Unreadable(f"{_show(path)}: {part!r} is a symbolic link or not a folder; "
                                     "links are never followed") from None
                raise Unreadable(f"{_show(path)}: cannot open folder {part!r}: {exc.strerror}") from None
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def check_fd(fd: int, name: str, *, max_bytes: int, expect: Identity | None = None,
             what: str = "file") -> os.stat_result:
    """``fstat`` an open descriptor and refuse what is not a bounded, single-link regular file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or special file")
        raise Unreadable(f"{name}: is {kind}, not a regular file")
    if st.st_nlink != 1:
        raise Unreadable(f"{name}: has {st.st_nlink} hard links; only a plain file with one name is read")
    if st.st_size > max_bytes:
        raise Unreadable(f"{name}: {st.st_size} bytes is over the {max_bytes}-byte limit for a {what}")
    if expect is not None and identity(st) != expect:
        raise Unreadable(f"{name}: was replaced after it was checked (another file now has this name)")
    return st


@contextlib.contextmanager
def open_file(path: Path, *, root: Path, max_bytes: int, expect: Identity | None = None,
              what: str = "file") -> Iterator[tuple[IO[bytes], os.stat_result]]:
    """The one way to open a shared-tree file: yields ``(file object, fstat)``; see module doc."""
    name = _show(Path(path).name)
    with open_dir(Path(path).parent, root) as dfd:
        try:
            fd = os.open(Path(path).name, _READ_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise Unreadable(f"{name}: is missing", gone=True) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise Unreadable(f"{name}: is a symbolic link; links are never followed") from None
            raise Unreadable(f"{name}: cannot be opened: {exc.strerror}") from None
    try:
        st = check_fd(fd, name, max_bytes=max_bytes, expect=expect, what=what)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st


@dataclass(frozen=True)
class Snapshot:
    """A shared-tree file's bytes, read once from one descriptor, with what ``fstat`` said."""

    data: bytes
    stat: os.stat_result

    @property
    def identity(self) -> Identity:
        return identity(self.stat)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_bytes(path: Path, *, root: Path, max_bytes: int, expect: Identity | None = None,
               what: str = "file") -> Snapshot:
    """Read a whole (bounded) file; a file that grew past ``max_bytes`` while read is refused."""
    with open_file(path, root=root, max_bytes=max_bytes, expect=expect, what=what) as (fh, st):
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Unreadable(f"{_show(Path(path).name)}: grew past the {max_bytes}-byte limit for a {what} while read")
    return Snapshot(data, st)


def sha256_of(path: Path, *, root: Path, max_bytes: int, expect: Identity | None = None,
              what: str = "file") -> tuple[str, os.stat_result]:
    """Hash a (bounded) file from its descriptor, 1 MiB at a time: ``(hex digest, fstat)``."""
    h = hashlib.sha256()
    read = 0
    with open_file(path, root=root, max_bytes=max_bytes, expect=expect, what=what) as (fh, st):
        for block in iter(lambda: fh.read(1 << 20), b""):
            read += len(block)
            if read > max_bytes:
                raise Unreadable(f"{_show(Path(path).name)}: grew past the {max_bytes}-byte limit while read")
            h.update(block)
    return h.hexdigest(), st


def read_text_or_none(path: Path, *, root: Path, max_bytes: int = CAPTION_MAX_BYTES) -> str | None:
    """A UTF-8 text file a reviewer may have moved, edited, broken or booby-trapped: None if it
    is missing, unreadable, not UTF-8 or refused (symlink, FIFO, too big)."""
    try:
        return read_bytes(path, root=root, max_bytes=max_bytes, what="text file").data.decode("utf-8")
    except (Unreadable, UnicodeDecodeError, OSError):
        return None


def json_depth_ok(text: str, max_depth: int) -> bool:
    """True when no bracket nests deeper than ``max_depth`` (checked before ``json.loads``)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_bounded(text: str, *, max_depth: int = 64) -> Any:
    """``json.loads`` that treats too-deep nesting as bad input (ValueError), never RecursionError."""
    if not json_depth_ok(text, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json_or_none(path: Path, *, root: Path, max_bytes: int = SIDECAR_MAX_BYTES, max_depth: int = 64) -> Any:
    """The same for a JSON file (a sidecar): None if missing, refused or not (bounded) JSON."""
    text = read_text_or_none(path, root=root, max_bytes=max_bytes)
    if text is None:
        return None
    try:
        return loads_bounded(text, max_depth=max_depth)
    except ValueError:
        return None


def listdir(folder: Path, root: Path) -> list[tuple[str, os.stat_result]]:
    """``(name, lstat)`` of the entries of ``folder``, reached without following links; empty if
    the folder is not there or is refused (an entry removed while listed is left out)."""
    try:
        with open_dir(Path(folder), root) as dfd:
            out = []
            for name in os.listdir(dfd):
                try:
                    out.append((name, os.stat(name, dir_fd=dfd, follow_symlinks=False)))
                except OSError:
                    continue
            return out
    except (Unreadable, OSError):
        return []


def lstat_or_none(path: Path, *, root: Path) -> os.stat_result | None:
    """``lstat`` of a name relative to its parent folder, reached without following links."""
    path = Path(path)
    return lstat_names(path.parent, [path.name], root=root)[path.name]


def lstat_names(folder: Path, names: list[str], *, root: Path) -> dict[str, os.stat_result | None]:
    """``lstat`` of several names in one folder, reached once without following links (None: not
    there, or the folder cannot be reached)."""
    found: dict[str, os.stat_result | None] = dict.fromkeys(names)
    if not names:
        return found
    try:
        with open_dir(Path(folder), root) as dfd:
            for name in names:
                with contextlib.suppress(OSError):
                    found[name] = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (Unreadable, OSError):
        pass
    return found


# -- writing --------------------------------------------------------------------------------------
def quarantine_name(name: str) -> str:
    return f"{name}.quarantined-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def _quarantine(dfd: int, name: str, where: Path, why: str) -> None:
    """Rename a squatter (symlink, FIFO, file where a folder goes...) aside, visibly, and log it."""
    aside = quarantine_name(name)
    try:
        os.rename(name, aside, src_dir_fd=dfd, dst_dir_fd=dfd)
    except FileNotFoundError:
        return  # gone meanwhile
    log.warning("squatter moved aside", path=_show(where / name), moved_to=aside, reason=why)


def _enter(dfd: int, name: str, where: Path, create: bool) -> int:
    """Open (creating when asked) sub-folder ``name`` of ``dfd`` without following a link."""
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            if not create:
                raise Unreadable(f"{_show(where / name)}: folder is missing", gone=True) from None
            try:
                os.mkdir(name, dir_mode(), dir_fd=dfd)
            except FileExistsError:
                pass  # made meanwhile (by us or a squatter): look again
        except OSError as exc:
            if exc.errno not in _NOT_A_FOLDER:
                raise
            if not create:
                raise Unreadable(f"{_show(where / name)}: is a symbolic link or not a folder") from None
            _quarantine(dfd, name, where, "a symbolic link or file where a folder belongs")
    raise UnsafePathError(f"{_show(where / name)}: could not make a folder there (something keeps replacing it)")


@contextlib.contextmanager
def ensure_dir(path: Path, root: Path, *, create: bool = True) -> Iterator[int]:
    """A descriptor on folder ``path`` under ``root``, each missing component created, each
    squatting one (symlink, file, FIFO) quarantined first.  Nothing outside ``root`` is touched
    (``root`` itself, the operator's data folder, is made when missing)."""
    os.makedirs(root, mode=dir_mode(), exist_ok=True)
    fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    where = Path(root)
    try:
        for part in _parts(path, root):
            nfd = _enter(fd, part, where, create)
            os.close(fd)
            fd, where = nfd, where / part
        yield fd
    finally:
        os.close(fd)


def make_dirs(path: Path, root: Path) -> None:
    """:func:`ensure_dir` for its side effect (the folder exists, as a real folder)."""
    with ensure_dir(path, root):
        pass


def _clear_for_file(dfd: int, name: str, where: Path) -> None:
    """A folder or FIFO squatting a file name is moved aside (a symlink is simply replaced)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        _quarantine(dfd, name, where, "not a regular file where a file belongs")


def write_bytes(path: Path, data: bytes, *, root: Path) -> None:
    """Atomically (temp file, fsync, rename, fsync folder) write ``data`` to ``path`` under
    ``root``.  Readers see the old file or the whole new one; a symlink at ``path`` is replaced,
    never followed.  The file gets ``0666 & ~umask`` like any ``open()``."""
    path = Path(path)
    write_files(path.parent, [(path.name, data)], root=root)


def write_files(folder: Path, files: list[tuple[str, bytes]], *, root: Path) -> None:
    """:func:`write_bytes` for several files of one folder, in order: the folder is reached once
    and fsynced once, after the last rename (which makes every rename before it durable too)."""
    for name, _ in files:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise UnsafePathError(f"{_show(name)}: not a file name")
    with ensure_dir(Path(folder), root) as dfd:
        for name, data in files:
            _replace_in(dfd, Path(folder), name, data)
        with contextlib.suppress(OSError):
            os.fsync(dfd)


def _replace_in(dfd: int, folder: Path, name: str, data: bytes) -> None:
    """Temp file, fsync, rename over ``name`` in the folder ``dfd`` (the folder is not fsynced)."""
    _clear_for_file(dfd, name, folder)
    tmp = f".{name[:80]}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    try:
        write_new_file(fd, data)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def write_text(path: Path, text: str, *, root: Path) -> None:
    write_bytes(path, text.encode("utf-8"), root=root)


def json_bytes(data: Any) -> bytes:
    """Sidecars and error records as written: indented UTF-8 JSON, one trailing newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def write_json(path: Path, data: Any, *, root: Path) -> None:
    """Sidecars and error records: :func:`json_bytes`, written atomically."""
    write_bytes(path, json_bytes(data), root=root)


def rename(src: Path, dest: Path, *, root: Path) -> None:
    """``os.replace`` relative to folder descriptors: a symlink moves as a link, never followed;
    the destination folder is made (squatters quarantined)."""
    src, dest = Path(src), Path(dest)
    with open_dir(src.parent, root) as sfd, ensure_dir(dest.parent, root) as dfd:
        _clear_for_file(dfd, dest.name, dest.parent)
        os.rename(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd)


def link(src: Path, dest: Path, *, root: Path) -> None:
    """Hard-link ``src`` as ``dest`` (the link itself when ``src`` is a symlink)."""
    src, dest = Path(src), Path(dest)
    with open_dir(src.parent, root) as sfd, ensure_dir(dest.parent, root) as dfd:
        os.link(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)


def unlink(path: Path, *, root: Path, missing_ok: bool = True) -> None:
    path = Path(path)
    try:
        with open_dir(path.parent, root) as dfd:
            os.unlink(path.name, dir_fd=dfd)
    except (FileNotFoundError, Unreadable) as exc:
        if not missing_ok or (isinstance(exc, Unreadable) and not exc.gone):
            raise


def move_out(src: Path, dest: Path, *, root: Path) -> None:
    """Move a file out of a watched folder as link + unlink, not rename (see
    :func:`astrowatch.storage.images.move_out` for why); falls back to a rename where hard links
    are not supported.  Safe to repeat after a crash between the two steps."""
    src, dest = Path(src), Path(dest)
    with open_dir(src.parent, root) as sfd, ensure_dir(dest.parent, root) as dfd:
        _clear_for_file(dfd, dest.name, dest.parent)
        try:
            os.link(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileExistsError:
            a = os.stat(src.name, dir_fd=sfd, follow_symlinks=False)
            b = os.stat(dest.name, dir_fd=dfd, follow_symlinks=False)
            if identity(a) != identity(b):
                os.rename(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd)
                return
        except OSError:
            os.rename(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd)
            return
        os.unlink(src.name, dir_fd=sfd)


@contextlib.contextmanager
def append_file(path: Path, *, root: Path) -> Iterator[IO[bytes]]:
    """Open a log file for appending: created ``0666 & ~umask``; a symlink or non-file squatting
    its name is quarantined first, so an append never lands outside ``root``.  The descriptor is
    also readable (``os.pread``: the log's last byte, to start a record on a fresh line)."""
    path = Path(path)
    with ensure_dir(path.parent, root) as dfd:
        for _ in range(3):
            try:
                fd = os.open(path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, 0o666, dir_fd=dfd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.EISDIR, errno.ENXIO):
                    raise
                _quarantine(dfd, path.name, path.parent, "a symbolic link or folder where a log file belongs")
                continue
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                break
            os.close(fd)
            _quarantine(dfd, path.name, path.parent, "not a regular file where a log file belongs")
        else:
            raise UnsafePathError(f"{_show(path)}: could not open the log file (something keeps replacing it)")
    with os.fdopen(fd, "ab") as fh:
        yield fh


def remove_tree(path: Path, *, root: Path) -> bool:
    """Remove ``path`` (a file, a symlink -- the link itself --, or a whole folder) under ``root``,
    reached without following any link and removed with :func:`shutil.rmtree`'s descriptor-based
    walk (links inside are unlinked, never followed).  False when there was nothing there."""
    import shutil

    path = Path(path)
    try:
        with open_dir(path.parent, root) as dfd:
            try:
                st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path.name, dir_fd=dfd)
            else:
                os.unlink(path.name, dir_fd=dfd)
    except Unreadable as exc:
        if exc.gone:
            return False
        raise
    return True


class Staged:
    """A file being written under a hidden temporary name in its destination folder (opened
    without following links), then published by :meth:`commit` under a name that does not exist
    yet, or dropped by :meth:`abort`.  For streamed uploads: the bytes can be checked from
    :attr:`fd` (``os.pread``, or handed to a child) before anyone can take the file."""

    def __init__(self, folder: Path, *, root: Path, hint: str = "upload") -> None:
        self.folder = Path(folder)
        with ensure_dir(self.folder, root) as dfd:
            self._dfd = os.dup(dfd)
        self.tmp = f".{hint[:60]}.{secrets.token_hex(6)}.tmp"  # hidden and .tmp: the watcher ignores it
        try:
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=self._dfd)
            os.fchmod(self.fd, file_mode())
        except BaseException:
            os.close(self._dfd)
            raise
        self.size = 0
        self.done = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def commit(self, name: str) -> str:
        """Publish as ``name`` (or ``name (2)``... when taken: nothing is replaced); returns the name
        used.  Refused if the temporary name no longer is the file written (a swap in the folder)."""
        os.fsync(self.fd)
        st = os.stat(self.tmp, dir_fd=self._dfd, follow_symlinks=False)
        if identity(st) != identity(os.fstat(self.fd)):
            raise UnsafePathError(f"{_show(self.folder / self.tmp)}: was replaced while being written")
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, ""
        for n in range(1, 1000):
            candidate = name if n == 1 else f"{stem} ({n}){dot}{suffix}"
            try:
                os.link(self.tmp, candidate, src_dir_fd=self._dfd, dst_dir_fd=self._dfd, follow_symlinks=False)
            except FileExistsError:
                continue
            os.unlink(self.tmp, dir_fd=self._dfd)
            with contextlib.suppress(OSError):
                os.fsync(self._dfd)
            self._close()
            return candidate
        raise UnsafePathError(f"{_show(self.folder / name)}: no free name for it")

    def abort(self) -> None:
        if not self.done:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self._dfd)
            self._close()

    def _close(self) -> None:
        self.done = True
        os.close(self.fd)
        os.close(self._dfd)
