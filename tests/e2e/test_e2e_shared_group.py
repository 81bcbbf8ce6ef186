"""End to end, as installed: the daemon runs as a service uid, a reviewer and the upstream app
are other uids in the service's group, each with its own umask (sudo's 0022 for people, the
unit's UMask=0002 for the daemon).  The reviewer reads every result, runs ``status`` and
``review list`` and moves results into ``approved/``; the upstream uid creates its user folder and
reads the delivered image.  A second daemon on the same folder is refused.

Needs root (to switch uids with ``setpriv``); skipped otherwise.  Everything lives in a fresh
folder under /tmp that the other uids can traverse (pytest's tmp_path is private to root).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from harness import TEST_CONFIG, DaemonProcess, make_image, theme_bytes, wait_until
from uids import PYTHON, Uid, free_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                       reason="needs root to run the daemon, a reviewer and the upstream app as three uids"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to switch uids"),
    pytest.mark.skipif(PYTHON is None, reason="no Python interpreter + site-packages readable by other uids "
                       "(the venv lives under a private folder)"),
]


@pytest.fixture
def site(monkeypatch):
    """/tmp/aw-shared-*/{etc,srv}: /etc/astrowatch root-owned and group read-only (0750, config
    0640), the service's folder owned by the service uid; three uids sharing one group."""
    monkeypatch.setenv("PYTHONPATH", PYTHON[1])  # for the daemon, started through the harness
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    service_id, reviewer_id, upstream_id, group = free_ids(47100, 4)
    base = Path(tempfile.mkdtemp(prefix="aw-shared-", dir="/tmp"))
    os.chmod(base, 0o755)
    etc, srv = base / "etc", base / "srv"
    etc.mkdir()
    os.chown(etc, 0, group)
    os.chmod(etc, 0o750)
    srv.mkdir()
    os.chown(srv, service_id, group)
    os.chmod(srv, 0o755)
    config = etc / "config.yaml"
    config.write_text(yaml.safe_dump({**TEST_CONFIG, "data_dir": str(srv / "data")}, sort_keys=False))
    os.chown(config, 0, group)
    os.chmod(config, 0o640)
    yield {
        "base": base, "config": config, "data": srv / "data", "group": group,
        "service": Uid(service_id, group, group, "0022", base),  # sudo -u astrowatch: umask 0022
        "daemon": Uid(service_id, group, group, "0002", base),  # the unit: UMask=0002
        "reviewer": Uid(reviewer_id, reviewer_id, group, "0022", base),
        "upstream": Uid(upstream_id, upstream_id, group, "0022", base),
    }
    if not os.environ.get("AW_KEEP"):
        shutil.rmtree(base, ignore_errors=True)


READ_ALL = """
import sys, pathlib
files = [p for p in sorted(pathlib.Path(sys.argv[1]).rglob('*')) if p.is_file()]
for p in files:
    p.read_bytes()
print(len(files))
"""

UPSTREAM_DROP = """
import sys, pathlib
user = pathlib.Path(sys.argv[1])
user.mkdir()
(user / 'theme_gaby.json').write_bytes(pathlib.Path(sys.argv[2]).read_bytes())
(user / 'photo.png').write_bytes(pathlib.Path(sys.argv[3]).read_bytes())
"""

MOVE_ALL = """
import os, sys, pathlib
inbox, approved = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for suffix in ('.json', '.txt', '.png'):  # as a reviewer would: sidecars, then the image
    for p in sorted(inbox.glob('*' + suffix)):
        os.rename(p, approved / p.name)
"""


def _modes(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): stat.filemode(p.stat().st_mode) for p in [data, *sorted(data.iterdir())]}


def test_a_service_uid_a_reviewer_and_the_upstream_app_share_the_data_folder(site):
    data, env = site["data"], {"ASTROWATCH_CONFIG": str(site["config"])}

    # init as the service user under sudo's umask: the tree is still shared with the group
    out = site["service"].cli("init", env=env).stdout
    assert "using " in out and "next: astrowatch run" in out and "--config" not in out.split("next:")[1]
    assert not (site["base"] / "config.yaml").exists() and not (site["base"] / "srv" / "config.yaml").exists()
    modes = _modes(data)
    assert modes.pop("state") == "drwxr-sr-x"
    assert set(modes.values()) == {"drwxrwsr-x"}, modes
    assert "[  ok] shared with the group" in site["service"].cli("doctor", env=env, check=False).stdout

    # the upstream app makes its user folder and drops a theme and a photo
    staged = site["base"] / "staged"
    staged.mkdir()
    (staged / "theme.json").write_bytes(theme_bytes(user="gaby"))
    make_image(staged / "photo.png", size=(96, 64))
    os.chmod(staged, 0o755)
    site["upstream"].python(UPSTREAM_DROP, str(data / "Utilisateurs" / "gaby"), str(staged / "theme.json"),
                            str(staged / "photo.png"))

    daemon = DaemonProcess(site["config"], prefix=site["daemon"].prefix())
    daemon.log_path = site["base"] / "daemon.log"
    os.chmod(daemon._sockdir, 0o755)
    os.chmod(daemon.sock_path, 0o777)
    try:
        daemon.start()
        inbox = data / "inbox" / "gaby"
        reviewer = site["reviewer"]
        wait_until(lambda: json.loads(reviewer.cli("status", "--json", env=env).stdout)["counts"].get("inbox") == 2,
                   60, interval=0.3, what="two results in the inbox, as the reviewer's status sees it")

        # a second daemon on the same folder is refused at once, naming the first
        for command in ("run", "drain"):
            second = site["daemon"].cli(command, "--config", str(site["config"]), check=False)
            assert second.returncode == 75, second.stderr
            assert f"pid {daemon.proc.pid}" in second.stderr and "Traceback" not in second.stderr
        by_reviewer = reviewer.cli("run", env=env, check=False)  # a reviewer cannot start one at all
        assert by_reviewer.returncode == 77 and "service user" in by_reviewer.stderr, by_reviewer.stderr

        # what the daemon wrote honours its umask: the group reads it
        for p in inbox.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o664, (p, oct(p.stat().st_mode))
        assert stat.S_IMODE((data / "state" / "daemon.json").stat().st_mode) == 0o664

        # the reviewer reads every result, lists them, and approves them by moving the files
        assert reviewer.python(READ_ALL, str(inbox)).stdout.strip() == "6"
        status = reviewer.cli("status", env=env)
        assert "daemon: running" in status.stdout and "inbox (2)" in status.stdout, status.stdout
        listed = reviewer.cli("review", "list", env=env).stdout
        assert listed.count("inbox/gaby/") == 2, listed
        assert "data folder" in reviewer.cli("stats", env=env).stdout
        reviewer.python(MOVE_ALL, str(inbox), str(data / "approved"))

        delivered = data / "Utilisateurs" / "gaby" / "theme_gaby.png"
        wait_until(lambda: delivered.is_file() and list((data / "datasets" / "gaby").glob("*.png")), 30,
                   what="theme delivered and photo filed")
        head = site["upstream"].python("import sys;print(open(sys.argv[1],'rb').read(8).hex())", str(delivered))
        assert head.stdout.strip() == b"\x89PNG\r\n\x1a\n".hex()
        assert reviewer.python(READ_ALL, str(data / "datasets")).stdout.strip() == "4"  # png, txt, toml, astrowatch-captions.json

        # the reviewer's looks at the ledger created nothing in state/
        owners = {p.name: p.stat().st_uid for p in (data / "state").iterdir()}
        assert set(owners.values()) == {site["daemon"].uid}, owners
    finally:
        assert daemon.stop() == 0, daemon.log()
        daemon.close()

    # with the daemon stopped (no WAL files), the reviewer still reads the ledger
    assert not (data / "state" / "ledger.sqlite3-wal").exists()
    status = site["reviewer"].cli("status", env=env)
    assert "daemon: not running" in status.stdout and "delivered 1" in status.stdout, status.stdout
    assert not (data / "state" / "ledger.sqlite3-wal").exists()
    assert "inbox is empty" in site["reviewer"].cli("review", "list", env=env).stdout


def test_a_user_outside_the_group_gets_one_line_with_the_fix(site):
    outsider = Uid(site["reviewer"].uid, site["reviewer"].uid, site["reviewer"].uid, "0022", site["base"])
    env = {"ASTROWATCH_CONFIG": str(site["config"])}
    for args in (["status"], ["review", "list"], ["stats"]):
        proc = outsider.cli(*args, env=env, check=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "group" in proc.stderr, proc.stderr
    proc = outsider.cli("status", env={"ASTROWATCH_CONFIG": ""}, check=False)
    assert proc.returncode == 78 and "ASTROWATCH_CONFIG" in proc.stderr and "Traceback" not in proc.stderr
