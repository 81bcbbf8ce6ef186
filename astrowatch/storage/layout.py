"""The data folder layout, and the only place that turns names from the filesystem into paths.

User names and file names come from whoever can write into ``Utilisateurs/``: treat them as
hostile.  :func:`check_user_name` refuses anything that could escape a folder or cannot be
shown safely; :meth:`Layout.rel` refuses any path outside the data root.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import unicodedata
from pathlib import Path

from astrowatch.core.errors import UnsafePathError
from astrowatch.core.jobs import Decision
from astrowatch.storage import safefs

USERS = "Utilisateurs"
INBOX = "inbox"  # results awaiting review; approved/, rejected/ and redo/ are the Decision folders
FAILED = "failed"
FOLDERS = (USERS, INBOX, *(decision.folder for decision in Decision), FAILED, "datasets", "archive",
           "logs", "state")
DECISION_FOLDERS = {decision.folder: decision for decision in Decision}  # folder -> the decision it says
REVIEW_FOLDER = "_review"  # failed/_review/ holds files dropped in approved/ etc. that are not ours
RESERVED_USERS = frozenset({REVIEW_FOLDER})
MAX_NAME_BYTES = 200
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})  # control and format characters, line separators

# Drop-folder noise: never inputs (see shared/reference/watching.md).
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
IGNORED_DIRS = frozenset({"@eaDir", ".stfolder", ".stversions", ".Trashes", "__MACOSX", ".Spotlight-V100"})


def check_name(name: str, what: str = "file name") -> str:
    """Refuse names that are not one safe path component (returns the name unchanged)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafePathError(f"{what} {name!r} is not a safe name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"{what} {name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise UnsafePathError(f"{what} {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    if any(unicodedata.category(c) in UNSAFE_CATEGORIES for c in name):
        raise UnsafePathError(f"{what} {name!r} contains control characters")
    return name


def check_user_name(name: str) -> str:
    check_name(name, "user folder name")
    if name.startswith(".") or name.strip() != name:
        raise UnsafePathError(f"user folder name {name!r} starts with a dot or has surrounding spaces")
    if name in RESERVED_USERS:
        raise UnsafePathError(f"user folder name {name!r} is reserved")
    return name


@functools.cache
def user_name_pattern() -> str:
    """:func:`check_user_name` as a regular expression, for the API's OpenAPI document (Python's
    ``re`` syntax, as Schemathesis and ``jsonschema`` read it: ``\\U`` escapes beyond the BMP).
    Built from the same rules (the categories of :data:`UNSAFE_CATEGORIES`, ``str.isspace``, the
    reserved names), so the two cannot drift; the length (:data:`MAX_NAME_BYTES` bytes of UTF-8)
    is the schema's ``maxLength`` and description."""
    unsafe = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in UNSAFE_CATEGORIES
              or 0xD800 <= c <= 0xDFFF or chr(c) in "/\\"]  # surrogates: never valid UTF-8
    space = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    inner = _char_class(unsafe)
    edge = _char_class(sorted(set(unsafe) | set(space)))
    reserved = "".join(f"(?!{name}$)" for name in sorted(RESERVED_USERS))
    # (?!.*\n): Python's $ also matches before a final newline, which the classes already refuse
    return f"^(?!.*\\n)(?!\\.){reserved}[^{edge}](?:[^{inner}]*[^{edge}])?$"


def _char_class(codes: list[int]) -> str:
    """The inside of a ``[...]`` matching ``codes`` (sorted), as ranges of escapes."""
    def esc(c: int) -> str:
        return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"

    out, start = [], codes[0]
    for prev, cur in zip(codes, [*codes[1:], -1], strict=True):
        if cur != prev + 1:
            out.append(esc(start) if start == prev else f"{esc(start)}-{esc(prev)}")
            start = cur
    return "".join(out)


def display(path: object) -> str:
    """A printable form of any path, even one with undecodable bytes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def is_ignored_name(name: str) -> bool:
    """Temporary, hidden and system files that are never inputs or decisions."""
    return (name.startswith(".") or name.startswith("~$") or name.startswith("._")
            or name.endswith("~") or name in IGNORED_NAMES
            or name.endswith((".part", ".crdownload", ".tmp", ".partial", ".download"))
            or (len(name) > 4 and name[-4:-1] == ".sw"))


class Layout:
    """Paths under ``data_dir``.  Relative paths stored in the ledger are POSIX strings."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.users = self.root / USERS
        self.inbox = self.root / INBOX
        self.approved = self.root / Decision.APPROVE.folder
        self.rejected = self.root / Decision.REJECT.folder
        self.redo = self.root / Decision.REDO.folder
        self.failed = self.root / FAILED
        self.datasets = self.root / "datasets"
        self.archive = self.root / "archive"
        self.logs = self.root / "logs"
        self.state = self.root / "state"
        self.work = self.state / "work"  # one folder per job in flight
        self.cache = self.state / "cache"  # enhance results by content key
        self.reviews_log = self.logs / "reviews.jsonl"
        self.generations_log = self.logs / "generations.jsonl"

    def ensure(self) -> None:
        """Make the data folder and its top-level folders.  Something squatting a folder's name
        (a plain file, a symlink, a FIFO) is moved aside to ``<name>.quarantined-<time>-xxxx`` and
        logged, then the folder is made: a start never fails, nor follows a link, because of it."""
        self.root.mkdir(parents=True, exist_ok=True)  # the operator's choice: may sit under a symlink
        for folder in FOLDERS:
            safefs.make_dirs(self.root / folder, self.root)
        safefs.make_dirs(self.work, self.root)
        self.close_state()

    def close_state(self) -> None:
        """The group reads ``state/`` but never writes it: a reviewer's read-only look at the
        ledger must not be able to create its ``-wal``/``-shm`` (the daemon could not write them)."""
        try:
            with safefs.open_dir(self.state, self.root) as fd:  # never a symlink's target
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and st.st_mode & 0o022:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)
        except (safefs.Unreadable, OSError):
            pass  # missing, not a folder, or not ours: 'astrowatch doctor' reports it

    def rel(self, path: Path) -> str:
        """``path`` relative to the data root, refusing anything outside it (no symlink following)."""
        absolute = Path(os.path.abspath(path))
        try:
            rel = absolute.relative_to(self.root)
        except ValueError:
            raise UnsafePathError(f"{path} is outside the data folder {self.root}") from None
        if ".." in rel.parts:
            raise UnsafePathError(f"{path} is outside the data folder {self.root}")
        text = rel.as_posix()
        try:
            text.encode("utf-8")  # everything stored in the ledger and logs is valid UTF-8
        except UnicodeEncodeError:
            raise UnsafePathError(f"{display(path)} has a name that is not valid UTF-8") from None
        return text

    def abs(self, rel: str) -> Path:
        path = Path(os.path.normpath(self.root / rel))
        self.rel(path)  # re-check: a stored path never escapes
        return path

    def user_dir(self, user: str) -> Path:
        return self.users / check_user_name(user)

    def inbox_dir(self, user: str) -> Path:
        return self.inbox / check_user_name(user)

    def failed_dir(self, user: str) -> Path:
        return self.failed / (user if user in RESERVED_USERS else check_user_name(user))

    def dataset_dir(self, user: str) -> Path:
        return self.datasets / check_user_name(user)

    def archive_dir(self, user: str, job_id: str) -> Path:
        return self.archive / check_user_name(user) / check_name(job_id, "job id")

    def work_dir(self, job_id: str) -> Path:
        return self.work / check_name(job_id, "job id")

    def remote_dir(self, job_id: str) -> Path:
        """``executor: celery`` with a shared data folder: a job's input for the GPU hosts."""
        return self.state / "remote" / check_name(job_id, "job id")

    @property
    def ledger_path(self) -> Path:
        return self.state / "ledger.sqlite3"

    @property
    def daemon_state_path(self) -> Path:
        return self.state / "daemon.json"

    def decision_of(self, path: Path) -> Decision | None:
        """'approve' / 'reject' / 'redo' for a path inside approved/, rejected/ or redo/."""
        try:
            first = Path(self.rel(path)).parts[0]
        except (UnsafePathError, IndexError):
            return None
        return DECISION_FOLDERS.get(first)
