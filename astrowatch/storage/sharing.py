"""The data folder as a tree shared by one Unix group: the service user, the reviewers, the
upstream app.

``init`` calls :func:`share_tree`: every folder group-writable with the setgid bit (new entries
keep the group), whatever the caller's umask (sudo's is 0022), except ``state/`` which the group
reads but never writes; and a default ACL on ``Utilisateurs/`` so that the user folders the
upstream app creates stay group-writable whatever its umask.  ``doctor`` calls
:func:`group_problems`: what the group could not do -- create a user folder in ``Utilisateurs/``,
move a result out of the inbox into ``approved/``, read an inbox file or the ledger -- each with
the command that fixes it.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Callable
from pathlib import Path

from astrowatch.storage import safefs
from astrowatch.storage.files import has_group_default_acl, set_group_default_acl, share_fd_with_group
from astrowatch.storage.layout import DECISION_FOLDERS, FOLDERS, Layout

READ_ONLY_FOR_GROUP = frozenset({"state"})
MAX_LISTED = 3


def share_tree(layout: Layout) -> list[str]:
    """Group bits on the data root and every folder under it; returns what could not be changed.

    ``init`` may run as root over a tree the group writes into: every folder is entered by
    descriptor without following a link and changed with ``fchmod``/``fsetxattr`` on that
    descriptor, so a symlink planted anywhere below the data root never redirects a chmod or an
    ACL onto something outside it (links are skipped, never followed)."""
    skipped: list[str] = []
    root = layout.root

    def share(fd: int, path: Path, readonly: bool = False) -> None:
        try:
            share_fd_with_group(fd, readonly=readonly)
        except PermissionError:
            skipped.append(str(path))

    with safefs.open_dir(root, root) as rfd:
        share(rfd, root)
    # The upstream app creates Utilisateurs/<user>/ under its own umask; the daemon must be able
    # to move photos out of it and deliver theme_<user>.png into it.
    try:
        with safefs.open_dir(layout.users, root) as ufd:
            set_group_default_acl(ufd)  # best effort: only the owner may, and only where ACLs exist
            _walk(ufd, layout.users, lambda fd, _path: set_group_default_acl(fd), 1)
    except safefs.Unreadable:
        pass  # not a folder (yet): 'astrowatch doctor' reports it
    for folder in FOLDERS:
        top = layout.root / folder
        readonly = folder in READ_ONLY_FOR_GROUP
        try:
            with safefs.open_dir(top, root) as tfd:
                share(tfd, top, readonly)
                if not readonly:
                    _walk(tfd, top, share, MAX_DEPTH)
        except safefs.Unreadable:
            continue
    return skipped


MAX_DEPTH = 16  # the tree is archive/<user>/<job>: deeper nesting is a group member's, left as is


def _walk(fd: int, where: Path, visit: Callable[[int, Path], object], depth: int) -> None:
    """``visit(fd, path)`` every real sub-folder of the folder open on ``fd``, ``depth`` levels
    down, each opened without following a link (a symlink, or a folder swapped for one meanwhile,
    is skipped); one descriptor per level is open at a time."""
    if depth <= 0:
        return
    try:
        names = sorted(os.listdir(fd))
    except OSError:
        return
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                continue
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            continue
        try:
            visit(sub, where / name)
            _walk(sub, where / name, visit, depth - 1)
        finally:
            os.close(sub)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def group_members(gid: int) -> list[str]:
    """The users listed as supplementary members of ``gid`` (reviewers, the upstream app)."""
    try:
        return sorted(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


def _can(st: os.stat_result, gid: int, bits: int) -> bool:
    """Whether members of ``gid`` (not the owner) get ``bits`` (a combination of r=4 w=2 x=1)."""
    mode = stat.S_IMODE(st.st_mode)
    group = (mode >> 3) & 7 if st.st_gid == gid else 0
    return (group | (mode & 7)) & bits == bits


def _folder(path: Path, gid: int, bits: int, what: str) -> list[str]:
    try:
        st = path.lstat()  # a link is reported, never followed
    except OSError:
        return [f"{path} is missing (run 'astrowatch init')"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"{path} is not a folder (a symbolic link or file squats its name; the daemon moves it aside "
                "to a '.quarantined-' name at its next start, or move it away yourself)"]
    problems = []
    if not _can(st, gid, bits):
        need = "".join(c for c, b in (("r", 4), ("w", 2), ("x", 1)) if bits & b)
        fix = f"chgrp {group_name(gid)} {path} && chmod g+{need}s {path}" if st.st_gid != gid \
            else f"chmod g+{need}s {path}"
        problems.append(f"the group cannot {what} ({path} is {stat.filemode(st.st_mode)} "
                        f"{group_name(st.st_gid)}; fix: {fix})")
    return problems


def group_problems(layout: Layout) -> tuple[int, list[str]]:
    """(the data folder's group, what that group cannot do that it must)."""
    gid = layout.root.stat().st_gid
    problems: list[str] = []
    closed = [p for p in reversed(layout.root.parents) if not _can(p.stat(), gid, 1)]
    if closed:
        fixes = " && ".join(f"chmod {'g' if p.stat().st_gid == gid else 'o'}+x {p}" for p in closed)
        problems.append(f"the group cannot reach the data folder through {', '.join(map(str, closed))} "
                        f"(fix: {fixes})")
    problems += _folder(layout.root, gid, 5, "open the data folder")
    problems += _folder(layout.users, gid, 7, "create a user folder in Utilisateurs/")
    problems += _user_folders(layout, gid)
    for folder in DECISION_FOLDERS:
        problems += _folder(layout.root / folder, gid, 7, f"move results into {folder}/")
    problems += _folder(layout.inbox, gid, 5, "list the inbox")
    problems += _folder(layout.state, gid, 5, "read the ledger (status, review list)")
    problems += _inbox(layout, gid)
    problems += _state(layout, gid)
    return gid, problems


def _user_folders(layout: Layout, gid: int) -> list[str]:
    """The service moves photos out of each user folder and delivers theme_<user>.png into it."""
    try:
        folders = sorted(p for p in layout.users.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    problems = []
    for folder in folders:
        found = _folder(folder, gid, 7, f"write into Utilisateurs/{folder.name}/ (the daemon moves photos "
                        "out and delivers the image there)")
        if found and not has_group_default_acl(layout.users):
            found[-1] = found[-1][:-1] + ("; make the upstream app create folders with umask 0002, or run "
                                          "'astrowatch init' as root to set a default ACL on Utilisateurs/)")
        problems += found
    return problems


def _inbox(layout: Layout, gid: int) -> list[str]:
    """Each user's inbox folder must let the group move results out; each result must be readable."""
    problems: list[str] = []
    unreadable: list[str] = []
    inbox = layout.inbox
    try:
        users = sorted(p for p in inbox.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return problems
    for folder in users:
        problems += _folder(folder, gid, 7, f"move results out of inbox/{folder.name}/")
        for entry in sorted(folder.iterdir()):
            try:
                st = entry.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and not _can(st, gid, 4):
                unreadable.append(str(entry))
    if unreadable:
        listed = ", ".join(unreadable[:MAX_LISTED]) + (f" and {len(unreadable) - MAX_LISTED} more"
                                                        if len(unreadable) > MAX_LISTED else "")
        problems.append(f"the group cannot read {len(unreadable)} inbox file(s): {listed} (fix: "
                        f"chgrp -R {group_name(gid)} {inbox} && chmod -R g+r {inbox}; the service needs "
                        "UMask=0002)")
    return problems


def _state(layout: Layout, gid: int) -> list[str]:
    problems: list[str] = []
    state = layout.state
    try:
        st = state.stat()
    except OSError:
        return problems
    if st.st_gid == gid and stat.S_IMODE(st.st_mode) & 0o020:
        problems.append(f"the group can write {state}: a reviewer's read-only look at the ledger could "
                        f"create files the daemon cannot write (fix: chmod g-w {state})")
    ledger = layout.ledger_path
    try:
        lst = ledger.stat()
    except OSError:
        return problems
    if not _can(lst, gid, 4):
        problems.append(f"the group cannot read the ledger {ledger} (fix: chgrp {group_name(gid)} {ledger}* "
                        f"&& chmod g+r {ledger}*)")
    return problems
