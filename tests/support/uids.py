"""Run commands as other Unix identities (root only): the service uid, reviewers, the upstream app.

``setpriv`` switches uid, group list and umask, then executes an interpreter every uid can read
(the venv's own may live under a private home: then the system's interpreter of the same version
reads the venv's site-packages).  Used by the shared-group test and the hostile suite.
"""

from __future__ import annotations

import grp
import os
import pwd
import site as pysite
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_ids(start: int, n: int) -> list[int]:
    """``n`` numbers from ``start`` on that are neither a user id nor a group id here."""
    ids, candidate = [], start
    while len(ids) < n:
        try:
            pwd.getpwuid(candidate)
        except KeyError:
            try:
                grp.getgrgid(candidate)
            except KeyError:
                ids.append(candidate)
        candidate += 1
    return ids


def traversable(path: Path) -> bool:
    """Whether any uid can reach and read ``path`` (o+x on every folder above, o+r on it)."""
    path = Path(path)
    return all(os.stat(p).st_mode & 0o001 for p in path.parents) and bool(os.stat(path).st_mode & 0o004)


def shared_python() -> tuple[str, str] | None:
    """An interpreter other uids can run, and the PYTHONPATH giving it this tree and our packages."""
    paths = [str(ROOT), *pysite.getsitepackages()]
    if not all(traversable(Path(p)) for p in paths):
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (Path(sys.executable).resolve(), Path(f"/usr/bin/python{version}")):
        if exe.is_file() and traversable(exe):
            return str(exe), os.pathsep.join(paths)
    return None


PYTHON = shared_python()


class Uid:
    """One Unix identity: ``run`` executes a Python command line (``sys.executable ...``) as it, in
    the group, with its umask, on an interpreter that uid can read."""

    def __init__(self, uid: int, gid: int, group: int, umask: str, cwd: Path) -> None:
        self.uid, self.gid, self.group, self.umask, self.cwd = uid, gid, group, umask, cwd

    def prefix(self) -> list[str]:
        """Put before ``sys.executable ARGS``: switches uid, sets the umask, swaps the interpreter."""
        assert PYTHON is not None
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", f"--groups={self.group}",
                "sh", "-c", f'umask {self.umask}; shift; exec {PYTHON[0]} "$@"', "sh"]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        assert PYTHON is not None
        return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", "PYTHONPATH": PYTHON[1],
                **(extra or {})}

    def run(self, *cmd: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120,
            input: bytes | str | None = None) -> subprocess.CompletedProcess:
        assert cmd[0] == sys.executable
        proc = subprocess.run([*self.prefix(), *cmd], capture_output=True, text=not isinstance(input, bytes),
                              timeout=timeout, env=self.env(env), cwd=self.cwd, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"uid {self.uid}: {' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def python(self, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", code, *args, **kw)

    def cli(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "astrowatch", *args, env=env, check=check, timeout=timeout)


class SameUid(Uid):
    """The current user standing in for another identity (not root: no ``setpriv``), with its umask."""

    def __init__(self, umask: str, cwd: Path) -> None:
        super().__init__(os.getuid(), os.getgid(), os.getgid(), umask, cwd)

    def prefix(self) -> list[str]:
        return ["sh", "-c", f'umask {self.umask}; shift; exec {sys.executable} "$@"', "sh"]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}
