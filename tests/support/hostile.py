"""The hostile group member (issue 22, item 9): a site where the daemon runs as its own service uid
(``UMask=0002``) and the attacker is another uid in the service's group, plus the checks every
hostile test ends with (:meth:`Site.after`).

Where the tests do not run as root (or ``setpriv`` or a shared interpreter is missing) everything
runs as the current user: the attacks are the same, only the secret is then also readable by the
"attacker" (the daemon must still never copy it into the tree).

Layout of one site, a fresh folder under /tmp that every uid can traverse::

    base/etc/config.yaml        root:group 0640 (etc/ 0750): the group reads, nobody else writes
    base/srv/data/              data_dir, made by ``astrowatch init`` as the service uid
    base/outside/               what the daemon must never write into nor copy from:
        secret.json             service uid 0600, a valid theme/sidecar/caption carrying MARKER-<hex>
        secret_<user>.json      the same, a valid theme for <user> (swap race, symlinked themes)
        secret.jpg              service uid 0600, a JPEG whose comment is the marker
        open/                   0777: a folder anyone may write into (where symlinked folders point)
        open/log.jsonl          0666: where symlinked logs point
    base/testlogs/              the daemon's and the API's stdout (scanned for the marker too)

Use it as the fixture ``site``: ``from hostile import site_fixture  # noqa: F401`` in the test module.
"""

from __future__ import annotations

import base64
import copy
import glob
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import TEST_CONFIG, DaemonProcess, theme_bytes, wait_until
from uids import PYTHON, SameUid, Uid, free_ids

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv") is not None and PYTHON is not None

HOSTILE_CONFIG: dict[str, Any] = {
    **copy.deepcopy(TEST_CONFIG),
    "watch": {"stability_seconds": 0.3, "rescan_seconds": 2.0},
    "astro": {"backend": "fake", "wheel_size": 256},
    "fake": {"size": 32},
}
SETTLE = 45.0  # seconds an input or a decision gets to reach a visible state (2 cores, 6 engineers)
QUARANTINE = ".quarantined-"  # astrowatch.storage.safefs.quarantine_name: "<name>.quarantined-<time>-<hex>"
TREE_READ_CAP = 64 << 20  # files above this are read extent by extent (sparse bombs cost nothing)

# One process per batch of attacks, run as the attacker uid: a JSON list of [op, args...] on stdin.
ATTACK = r"""
import base64, json, os, shutil, sys, time
for op, *a in json.loads(sys.stdin.read()):
    if op == "mkdir":
        os.makedirs(a[0], exist_ok=True)
    elif op == "write":
        os.makedirs(os.path.dirname(a[0]), exist_ok=True)
        tmp = os.path.join(os.path.dirname(a[0]), "." + os.path.basename(a[0]) + ".w~")
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(a[1]))
        os.rename(tmp, a[0])
    elif op == "symlink":  # put a symlink at a[1] pointing at a[0], replacing a file there atomically
        tmp = os.path.join(os.path.dirname(a[1]), "." + os.path.basename(a[1]) + ".l~")
        os.symlink(a[0], tmp)
        os.rename(tmp, a[1])
    elif op == "fifo":
        if os.path.lexists(a[0]):
            os.unlink(a[0])
        os.mkfifo(a[0], 0o666)
    elif op == "sparse":  # a[1] bytes of which only the head a[2] (base64) is written
        with open(a[0], "wb") as fh:
            fh.write(base64.b64decode(a[2]))
        os.truncate(a[0], a[1])
    elif op == "rename":
        os.rename(a[0], a[1])
    elif op == "rmtree":
        shutil.rmtree(a[0])
    elif op == "unlink":
        os.unlink(a[0])
    elif op == "copy":
        shutil.copyfile(a[0], a[1])
    elif op == "sleep":
        time.sleep(a[0])
    else:
        raise SystemExit("unknown op " + op)
"""

LEDGER_QUERY = r"""
import json, sqlite3, sys
con = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=10)
rows = con.execute("SELECT id, user, kind, source, state, error, params FROM jobs").fetchall()
print(json.dumps([dict(zip(("id", "user", "kind", "source", "state", "error", "params"), r)) for r in rows]))
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def snapshot(root: Path, skip: Iterable[Path] = ()) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): type, mode, owner, size, mtime, content."""
    skip = {os.path.abspath(p) for p in skip}
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            if path in skip:
                continue
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest() if st.st_size < TREE_READ_CAP else ""
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = ""
            found[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                                  st.st_size, st.st_mtime_ns, st.st_nlink, content)
    return found


def file_data(path: str) -> bytes:
    """A regular file's bytes, opened without following links or blocking; a big (sparse) file is
    read extent by extent, so an 8 GB sparse bomb costs its few written bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b""
        if st.st_size <= TREE_READ_CAP:
            with os.fdopen(os.dup(fd), "rb") as fh:
                return fh.read()
        chunks, offset = [], 0
        while offset < st.st_size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            assert end - start <= TREE_READ_CAP, f"{path}: {end - start} bytes of real data"
            os.lseek(fd, start, os.SEEK_SET)
            chunks.append(os.read(fd, end - start))
            offset = end
        return b"".join(chunks)
    finally:
        os.close(fd)


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Every regular file under ``root`` (links not followed) whose bytes contain ``needle``; the
    needle is also looked for UTF-16/escaped, in case a log escaped it."""
    needles = {needle, needle.decode().encode("utf-16-le"), json.dumps(needle.decode()).encode()[1:-1]}
    hits = []
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = os.path.join(folder, name)
            try:
                data = file_data(path)
            except OSError:  # gone meanwhile, or a socket
                continue
            if any(n in data for n in needles):
                hits.append(os.path.relpath(path, root))
    return hits


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


class Site:
    """One shared install under attack; see the module docstring."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.as_root = AS_ROOT
        self.marker = f"MARKER-{secrets.token_hex(8)}"
        self.base = Path(tempfile.mkdtemp(prefix="aw-hostile-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.etc, self.srv, self.outside = self.base / "etc", self.base / "srv", self.base / "outside"
        self.testlogs = self.base / "testlogs"
        self.data = self.srv / "data"
        self.config = self.etc / "config.yaml"
        for folder in (self.etc, self.srv, self.outside, self.testlogs):
            folder.mkdir()
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
        monkeypatch.delenv("ASTROWATCH_CONFIG", raising=False)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        if self.as_root:
            assert PYTHON is not None
            monkeypatch.setenv("PYTHONPATH", PYTHON[1])  # for the daemon, started through the harness
            service_id, attacker_id, reviewer_id, group = free_ids(47300 + secrets.randbelow(500) * 8, 4)
            self.group = group
            self.service = Uid(service_id, group, group, "0022", self.base)  # sudo -u astrowatch
            self.daemon_uid = Uid(service_id, group, group, "0002", self.base)  # the unit: UMask=0002
            self.attacker = Uid(attacker_id, attacker_id, group, "0022", self.base)
            self.reviewer = Uid(reviewer_id, reviewer_id, group, "0022", self.base)
            os.chown(self.etc, 0, group)
            os.chmod(self.etc, 0o750)
            os.chown(self.srv, service_id, group)
            os.chmod(self.srv, 0o755)
        else:
            self.group = os.getgid()
            self.service = SameUid("0022", self.base)
            self.daemon_uid = SameUid("0002", self.base)
            self.attacker = SameUid("0022", self.base)
            self.reviewer = SameUid("0022", self.base)
        os.chmod(self.outside, 0o755)
        self.secret = self.outside / "secret.json"
        self._private(self.secret, self._marked_theme("victim"))
        self.secret_jpg = self.outside / "secret.jpg"
        from PIL import Image

        img = Image.new("RGB", (48, 40), (10, 200, 90))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", comment=self.marker.encode())
        self._private(self.secret_jpg, buf.getvalue())
        self.open_dir = self.outside / "open"
        self.open_dir.mkdir()
        os.chmod(self.open_dir, 0o777)
        (self.open_dir / "log.jsonl").write_text('{"outside": true}\n')
        os.chmod(self.open_dir / "log.jsonl", 0o666)
        self.daemons: list[DaemonProcess] = []
        self.apis: list[Any] = []
        self._probes = 0
        self.configure()
        self.outside_before: dict[str, tuple] = {}

    # -- setting up ------------------------------------------------------------------------------
    def _marked_theme(self, user: str) -> bytes:
        theme = json.loads(theme_bytes(user=user))
        theme.update(name=self.marker, city=self.marker, caption=self.marker, description=self.marker)
        theme["params"] = {"prompt": self.marker, "backend": "fake"}
        theme["job_id"] = "0123456789ab"
        return (json.dumps(theme) + "\n" + self.marker + "\n").encode()

    def _private(self, path: Path, data: bytes) -> Path:
        """A file only the daemon's uid reads (0600, owned by the service uid)."""
        path.write_bytes(data)
        if self.as_root:
            os.chown(path, self.service.uid, self.service.gid)
        os.chmod(path, 0o600)
        return path

    def secret_theme(self, user: str) -> Path:
        """``outside/secret_<user>.json``: a valid theme for ``user`` carrying the marker."""
        return self._private(self.outside / f"secret_{user}.json", self._marked_theme(user))

    def configure(self, base: dict[str, Any] | None = None, **sections: Any) -> Path:
        """Write the config (root:group 0640): HOSTILE_CONFIG with ``sections`` merged over it."""
        merged = copy.deepcopy(HOSTILE_CONFIG if base is None else base)
        for key, value in sections.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
        merged["data_dir"] = str(self.data)
        self.config.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
        if self.as_root:
            os.chown(self.config, 0, self.group)
        os.chmod(self.config, 0o640)
        if getattr(self, "outside_before", None):  # the test changed the config on purpose: that is not the daemon's write
            rel = str(self.config.relative_to(self.base))
            self.outside_before[rel] = self.outside_snapshot()[rel]
        return self.config

    def env(self) -> dict[str, str]:
        return {"ASTROWATCH_CONFIG": str(self.config)}

    def init(self) -> None:
        """``astrowatch init`` as the service user (sudo's umask): the tree, shared with the group."""
        self.service.cli("init", env=self.env())

    def freeze_outside(self) -> None:
        """Remember everything outside ``data_dir``; :meth:`after` checks nothing changed there."""
        self.outside_before = self.outside_snapshot()

    def outside_snapshot(self) -> dict[str, tuple]:
        return snapshot(self.base, skip=[self.data, self.testlogs])

    # -- the daemon --------------------------------------------------------------------------------
    def daemon(self, **kw: Any) -> DaemonProcess:
        d = DaemonProcess(self.config, prefix=self.daemon_uid.prefix() if self.as_root else [], **kw)
        d.log_path = self.testlogs / f"daemon-{len(self.daemons)}.log"
        os.chmod(d._sockdir, 0o755)
        os.chmod(d.sock_path, 0o777)
        self.daemons.append(d)
        return d

    def start(self, **kw: Any) -> DaemonProcess:
        """``init`` (first time), freeze the outside, start the daemon as the service uid: READY."""
        if not (self.data / "state").is_dir():
            self.init()
        if not self.outside_before:
            self.freeze_outside()
        return self.daemon(**kw).start()

    def stop(self, d: DaemonProcess, within: float = 5.0) -> None:
        """SIGTERM: with nothing generating the daemon exits 0 within ``within`` seconds."""
        assert d.proc is not None
        if d.proc.poll() is not None:
            raise AssertionError(f"the daemon had already exited ({d.proc.returncode}):\n{d.log()}")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(within + 25)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon ignored SIGTERM for {within + 25} s:\n{d.log()}") from None
        took = time.monotonic() - t0
        assert took <= within, f"SIGTERM took {took:.1f} s (> {within} s):\n{d.log()}"
        assert rc == 0, f"the daemon exited {rc} on SIGTERM:\n{d.log()}"

    def restart(self, d: DaemonProcess) -> DaemonProcess:
        """Stop (within 5 s) and start again with the tree as it is: READY within 60 s."""
        self.stop(d)
        d.close()
        return self.daemon().start()

    def close(self) -> None:
        for api in self.apis:
            api.close()
        for d in self.daemons:
            d.close()
        if AS_ROOT and not os.environ.get("AW_KEEP"):
            subprocess.run(["chmod", "-R", "u+rwX", str(self.base)], capture_output=True)
        if not os.environ.get("AW_KEEP"):
            shutil.rmtree(self.base, ignore_errors=True)

    # -- acting as the group member ----------------------------------------------------------------
    def attack(self, *ops: list[Any], as_: Uid | None = None, timeout: float = 120) -> None:
        """Run the ops (see ATTACK) as the attacker uid, in one process."""
        (as_ or self.attacker).python(ATTACK, input=json.dumps([list(op) for op in ops]), timeout=timeout)

    def user_dir(self, user: str) -> Path:
        return self.data / "Utilisateurs" / user

    def drop(self, user: str, name: str, payload: bytes, as_: Uid | None = None) -> Path:
        """The upstream app's move: ``Utilisateurs/<user>/<name>`` (folder made as needed)."""
        path = self.user_dir(user) / name
        self.attack(["mkdir", str(path.parent)], ["write", str(path), b64(payload)], as_=as_)
        return path

    def drop_theme(self, user: str) -> Path:
        return self.drop(user, f"theme_{user}.json", theme_bytes(user=user))

    def drop_photo(self, user: str, name: str = "photo.jpg", size: tuple[int, int] = (48, 40)) -> Path:
        return self.drop(user, name, image_bytes(name, size))

    def results(self, user: str, stem: str | None = None) -> list[Path]:
        """Result images in ``inbox/<user>/`` (of one input stem if given)."""
        folder = self.data / "inbox" / user
        pattern = f"{glob.escape(stem)}.*.png" if stem else "*.png"
        return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.is_symlink()) if folder.is_dir() else []

    def wait_result(self, user: str, stem: str | None = None, timeout: float = SETTLE,
                    d: DaemonProcess | None = None) -> Path:
        def found() -> Path | None:
            if d is not None and d.proc is not None and d.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({d.proc.returncode}):\n{d.log()}")
            got = self.results(user, stem)
            return got[0] if got and got[0].with_suffix(".json").is_file() else None

        return wait_until(found, timeout, interval=0.1, what=f"a result for {user}/{stem or '*'} in the inbox")

    def probe(self, d: DaemonProcess, timeout: float = SETTLE) -> Path:
        """The daemon keeps taking new files: an ordinary theme for a new user reaches the inbox."""
        self._probes += 1
        user = f"probe{self._probes}"
        self.drop_theme(user)
        return self.wait_result(user, f"theme_{user}", timeout, d=d)

    def ledger(self) -> list[dict[str, Any]]:
        """Every job (read as the service uid, so no -shm of another owner is ever made)."""
        out = self.service.python(LEDGER_QUERY, str(self.data / "state" / "ledger.sqlite3")).stdout
        return json.loads(out)

    # -- where things ended up ---------------------------------------------------------------------
    def quarantined(self, name: str) -> list[Path]:
        """Entries anywhere in the tree renamed aside as ``<name>.quarantined-*``."""
        return [Path(p) for p in glob.glob(str(self.data / "**" / f"{glob.escape(name)}{QUARANTINE}*"),
                                           recursive=True)]

    def failed_record(self, user: str, name: str) -> dict[str, Any] | None:
        """``failed/<user>/<name>.error.json`` (or its ``<ms>-<name>`` twin), when it has a reason."""
        folder = self.data / "failed" / user
        for path in sorted(folder.glob(f"*{glob.escape(name)}.error.json")) if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and str(record.get("reason") or "").strip():
                return record
        return None

    def input_state(self, user: str, name: str) -> str | None:
        """Where an input dropped as ``Utilisateurs/<user>/<name>`` ended: ``failed`` (with a
        reason), ``inbox`` (a result), ``quarantined``, or None (not yet / nowhere visible)."""
        if self.failed_record(user, name):
            return "failed"
        if self.results(user, name.rsplit(".", 1)[0]):
            return "inbox"
        if self.quarantined(name):
            return "quarantined"
        return None

    def bounce_note(self, user: str, result_name: str) -> str | None:
        stem = result_name.rsplit(".", 1)[0]
        note = self.data / "inbox" / user / f"{stem}.error.txt"
        try:
            text = note.read_text() if note.is_file() and not note.is_symlink() else ""
        except OSError:
            return None
        return text.strip() or None

    def decision_state(self, user: str, result_name: str) -> str | None:
        """Where a result moved into a decision folder ended: ``bounced`` (back in the inbox with a
        ``.error.txt``), ``decided`` (its job delivered/filed/rejected/redone), ``refused``
        (``failed/_review/``), ``quarantined``, or None."""
        if self.bounce_note(user, result_name) and (self.data / "inbox" / user / result_name).exists():
            return "bounced"
        if self.failed_record("_review", result_name):
            return "refused"
        if self.quarantined(result_name):
            return "quarantined"
        job_id = result_name.rsplit(".", 2)[-2] if result_name.count(".") >= 2 else ""
        if any(j["id"] == job_id and j["state"] in ("delivered", "filed", "rejected", "redone") for j in self.ledger()):
            return "decided"
        return None

    def leftovers(self) -> list[str]:
        """What is still in approved/, rejected/, redo/ (quarantined names excepted)."""
        left = []
        for folder in ("approved", "rejected", "redo"):
            root = self.data / folder
            for path in root.rglob("*") if root.is_dir() else []:
                if path.is_dir() and not path.is_symlink():
                    continue
                if QUARANTINE in path.name or path.name.startswith("."):
                    continue
                left.append(str(path.relative_to(self.data)))
        return left

    def marker_hits(self, extra: Iterable[str] = ()) -> list[str]:
        """Files of the data tree (ledger, WAL, logs, failed/, datasets/, archive/, inbox/...), the
        daemon's and the API's output, and ``extra`` texts that contain the marker."""
        needle = self.marker.encode()
        hits = files_containing(self.data, needle) + [f"testlogs/{h}" for h in files_containing(self.testlogs, needle)]
        hits += [f"text #{i}" for i, text in enumerate(extra) if self.marker in text]
        return hits

    # -- the checks every hostile test ends with ---------------------------------------------------
    def after(self, d: DaemonProcess, *, inputs: Iterable[tuple[str, str]] = (),
              decisions: Iterable[tuple[str, str]] = (), allowed: dict[tuple[str, str], set[str]] | None = None,
              empty_decision_folders: bool = True, restart: bool = True, timeout: float = SETTLE) -> dict[str, str]:
        """Every input and decision ends in one visible state; the daemon keeps taking new files; the
        marker is nowhere in the tree; nothing changed outside ``data_dir``; a restart reaches READY
        and takes new files again; SIGTERM ends it within 5 s.  Returns the states seen."""
        inputs, decisions, allowed = list(inputs), list(decisions), allowed or {}
        states: dict[str, str] = {}

        def settled() -> bool:
            if d.proc is not None and d.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({d.proc.returncode}):\n{d.log()}")
            for user, name in inputs:
                states[f"{user}/{name}"] = self.input_state(user, name) or ""
            for user, name in decisions:
                states[f"decision {user}/{name}"] = self.decision_state(user, name) or ""
            if empty_decision_folders and self.leftovers():
                return False
            return all(states.values())

        try:
            wait_until(settled, timeout, interval=0.25, what="every input and decision in a visible state")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstates: {states}\nleft in decision folders: {self.leftovers()}\n"
                                 f"{d.log()}") from None
        for (user, name), ok in allowed.items():
            key = f"{user}/{name}" if (user, name) in inputs else f"decision {user}/{name}"
            assert states[key] in ok, f"{key} ended {states[key]!r}, expected one of {sorted(ok)}"
        self.probe(d)
        assert d.proc.poll() is None, d.log()
        if restart:
            d = self.restart(d)
            self.probe(d)
        self.stop(d)
        hits = self.marker_hits()
        assert not hits, f"the secret marker leaked into {hits}"
        if self.outside_before:
            now = self.outside_snapshot()
            changed = sorted(k for k in set(now) | set(self.outside_before) if now.get(k) != self.outside_before.get(k))
            assert not changed, f"written outside data_dir: {changed}"
        return states


def image_bytes(name: str, size: tuple[int, int]) -> bytes:
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[name.rsplit(".", 1)[1].lower()]
    from PIL import Image

    img = Image.new("RGB", size, (200, 30, 60))
    img.paste((20, 40, 220), (0, 0, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(name="site")
def site_fixture(monkeypatch):
    """A :class:`Site`: config written (fake backend), nothing started yet."""
    site = Site(monkeypatch)
    try:
        yield site
    finally:
        site.close()


def reason_matches(text: str | None, *words: str) -> bool:
    return bool(text) and any(re.search(w, text, re.IGNORECASE) for w in words)


def api_process(site: Site, token: str | None):
    """``astrowatch api`` as the service uid (its output under testlogs/)."""
    from api_support import ApiProcess

    class SiteApi(ApiProcess):
        def start(self) -> ApiProcess:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env.pop("ASTROWATCH_API_TOKEN", None)
            if self.token:
                env["ASTROWATCH_API_TOKEN"] = self.token
            self._log = open(self.log_path, "ab")
            prefix = site.daemon_uid.prefix() if site.as_root else []
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "astrowatch", "api", "--config", str(self.config_path), "--port",
                 str(self.port), "--log-format", "json"], stdout=self._log, stderr=subprocess.STDOUT, env=env,
                cwd=site.base)
            wait_until(self._answers, timeout=60, what=f"astrowatch api on port {self.port}")
            return self

    api = SiteApi(site.config, token=token)
    api.log_path = site.testlogs / f"api-{api.port}.log"
    site.apis.append(api)
    return api
