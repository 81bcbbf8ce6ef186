"""Shared folders: what astrowatch creates honours the umask, ``init`` shares the tree with the
group whatever the caller's umask, ``doctor`` says what the group cannot do, and the reviewers'
read-only ledger never writes."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import run_cli, write_config

from astrowatch.core.errors import NotFound
from astrowatch.storage.files import file_mode, has_group_default_acl, process_umask
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.ledger_readonly import ReadOnlyLedger

WRITE_ALL = """
import pathlib, sys
from astrowatch.storage.images import atomic_write_text
from astrowatch.storage.jsonlog import append_jsonl
from astrowatch.storage.files import process_umask
out = pathlib.Path(sys.argv[1])
atomic_write_text(out / 'sidecar.json', '{}')
append_jsonl(out / 'log.jsonl', {'a': 1})
(out / 'folder').mkdir()
print(oct(process_umask()))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, file_bits, dir_bits", [(0o002, 0o664, 0o775), (0o027, 0o640, 0o750),
                                                        (0o077, 0o600, 0o700)])
def test_what_astrowatch_writes_honours_the_umask(tmp_path, umask, file_bits, dir_bits):
    out = subprocess.run([sys.executable, "-c", WRITE_ALL, str(tmp_path)], capture_output=True, text=True,
                         check=True, preexec_fn=lambda: os.umask(umask)).stdout
    assert int(out.strip(), 8) == umask
    assert _mode(tmp_path / "sidecar.json") == file_bits  # atomic: mkstemp's 0600 is not left behind
    assert _mode(tmp_path / "log.jsonl") == file_bits
    assert _mode(tmp_path / "folder") == dir_bits


def test_the_umask_is_read_without_changing_it():
    current = os.umask(0o022)
    os.umask(current)
    assert process_umask() == current
    assert file_mode() == 0o666 & ~current


def test_init_shares_the_tree_with_the_group_whatever_the_umask(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "astrowatch", "init", str(tmp_path / "site")], capture_output=True,
                          text=True, check=True, preexec_fn=lambda: os.umask(0o077))
    data = tmp_path / "site" / "data"
    assert _mode(data) == 0o2770 and _mode(data / "Utilisateurs") == 0o2770 and _mode(data / "approved") == 0o2770
    assert _mode(data / "state") == 0o2750  # the group reads the ledger, never writes there
    assert f"next: astrowatch run --config {tmp_path / 'site' / 'config.yaml'}" in proc.stdout
    if has_group_default_acl(data / "Utilisateurs"):  # where the filesystem has POSIX ACLs
        user = data / "Utilisateurs" / "gaby"
        subprocess.run(["mkdir", str(user)], check=True, preexec_fn=lambda: os.umask(0o022))
        assert _mode(user) & 0o070 == 0o070  # the upstream app's umask does not matter


def test_init_writes_no_second_config_when_one_is_named(tmp_path):
    named = write_config(tmp_path / "etc", data_dir=str(tmp_path / "srv" / "data"))
    site = tmp_path / "somewhere"
    site.mkdir()
    env = {**os.environ, "ASTROWATCH_CONFIG": str(named)}
    proc = subprocess.run([sys.executable, "-m", "astrowatch", "init"], capture_output=True, text=True,
                          check=True, cwd=site, env=env)
    assert list(site.iterdir()) == [] and (tmp_path / "srv" / "data" / "inbox").is_dir()
    assert "using" in proc.stdout and "$ASTROWATCH_CONFIG" in proc.stdout and "--config" not in proc.stdout
    proc = run_cli("init", str(site), config=named)
    assert list(site.iterdir()) == [] and f"next: astrowatch run --config {named}" in proc.stdout
    assert named.read_text().startswith("data_dir:")  # untouched


@pytest.fixture
def open_tmp():
    """A folder under /tmp that other uids can reach (pytest's tmp_path is private: 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aw-share-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _group_line(cfg: Path) -> str:
    out = run_cli("doctor", config=cfg, check=False).stdout
    return next(ln for ln in out.splitlines() if "shared with the group" in ln)


def test_doctor_says_when_the_group_cannot_reach_the_data_folder(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cfg = write_config(private)
    run_cli("init", config=cfg)
    line = _group_line(cfg)
    assert line.startswith("[warn]") and "reach the data folder through" in line and str(private) in line, line
    assert f"+x {private}" in line  # g+x when the folder has the data folder's group, else o+x


def test_doctor_names_what_the_group_cannot_do_and_the_fix(open_tmp):
    tmp_path = open_tmp
    cfg = write_config(tmp_path)
    run_cli("init", config=cfg)
    assert _group_line(cfg).startswith("[  ok]")
    approved, state = tmp_path / "data" / "approved", tmp_path / "data" / "state"
    os.chmod(approved, 0o755)
    os.chmod(state, 0o2775)
    line = _group_line(cfg)
    assert line.startswith("[warn]")
    assert "cannot move results into approved/" in line and f"chmod g+rwxs {approved}" in line
    assert f"chmod g-w {state}" in line


def _ledger_with_a_job(tmp_path: Path) -> Path:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/a.png", source_sha256="0" * 64)
    ledger.close()  # the last connection folds the WAL back and removes it, as a stopped daemon does
    return layout.ledger_path


def test_the_read_only_ledger_reads_a_stopped_daemons_ledger_and_writes_nothing(tmp_path):
    path = _ledger_with_a_job(tmp_path)
    before = sorted(p.name for p in path.parent.iterdir())
    ro = ReadOnlyLedger(path)
    assert ro.counts() == {"queued": 1}
    with pytest.raises(Exception, match="readonly|read-only"):
        ro.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/b.png", source_sha256="1" * 64)
    ro.close()
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_the_read_only_ledger_sees_what_a_running_daemon_writes(tmp_path):
    path = _ledger_with_a_job(tmp_path)
    writer = Ledger(path)
    ro = ReadOnlyLedger(path)
    writer.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json", source_sha256="2" * 64)
    assert ro.counts() == {"queued": 2}
    ro.close()
    writer.close()


def test_the_read_only_ledger_keeps_a_stopped_daemons_snapshot_only_while_the_file_is_unchanged(tmp_path):
    path = _ledger_with_a_job(tmp_path)
    ro = ReadOnlyLedger(path)
    assert ro.counts() == {"queued": 1}
    first = ro._conn()
    assert ro._conn() is first  # nothing changed: one connection for many queries (a /metrics scrape)
    writer = Ledger(path)  # a daemon runs, writes, and stops (its WAL folded back and removed)
    writer.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json", source_sha256="2" * 64)
    writer.close()
    assert not path.with_name(path.name + "-wal").exists()
    assert ro.counts() == {"queued": 2}
    ro.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the ledger to another uid")
def test_a_reader_who_does_not_own_the_ledger_never_creates_its_wal_files(tmp_path):
    path = _ledger_with_a_job(tmp_path)
    for p in [path.parent, path]:
        os.chown(p, 47999, 47999)
    os.chmod(path.parent, 0o2775)  # even where the folder would let the reader create them
    ro = ReadOnlyLedger(path)
    assert ro.counts() == {"queued": 1}
    assert not path.with_name(path.name + "-wal").exists() and not path.with_name(path.name + "-shm").exists()


def test_no_ledger_yet_is_a_clear_error(tmp_path):
    with pytest.raises(NotFound, match="no ledger"):
        ReadOnlyLedger(tmp_path / "state" / "ledger.sqlite3")
    cfg = write_config(tmp_path)
    out = run_cli("review", "list", config=cfg)
    assert "inbox is empty (no ledger yet" in out.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("groupadd") is None,
                    reason="needs root and groupadd to make a group with a member")
def test_doctor_fails_when_people_share_the_group_and_cannot_do_their_part(open_tmp):
    name = f"aw{os.getpid()}"
    subprocess.run(["groupadd", "-U", "nobody", name], check=True)
    try:
        cfg = write_config(open_tmp)
        run_cli("init", config=cfg)
        data = open_tmp / "data"
        gid = grp.getgrnam(name).gr_gid
        for path in [data, *data.iterdir()]:
            os.chown(path, 0, gid)
        os.chmod(data / "approved", 0o755)
        out = run_cli("doctor", config=cfg, check=False)
        line = next(ln for ln in out.stdout.splitlines() if "shared with the group" in ln)
        assert out.returncode == 1 and line.startswith("[FAIL]") and "members: nobody" in line, line
        assert "cannot move results into approved/" in line
    finally:
        subprocess.run(["groupdel", name], check=False)
