"""``astrowatch init [DIR] [--config FILE]``: the data folders, shared with the service's group,
and a commented config.yaml (never overwritten).

With ``--config`` or ``$ASTROWATCH_CONFIG`` naming a config (the service's
``/etc/astrowatch/config.yaml``), that config is used as is -- or written from the template if it
does not exist yet -- and no second ``config.yaml`` appears in DIR.  Whatever the caller's umask,
every folder of the data tree is made group-writable with the setgid bit, ``state/`` group
read-only.  The config is the daemon's: it is written ``0640`` whatever the umask, and an existing
config the caller owns loses any group or other write bit (``astrowatch run`` refuses one that has
them).
"""

from __future__ import annotations

import argparse
import os
import stat
from importlib import resources
from pathlib import Path


def _write_template(path: Path) -> None:
    from astrowatch.core.errors import ConfigError
    from astrowatch.runtime.settings import CONFIG_MODE

    template = resources.files("astrowatch").joinpath("config.example.yaml").read_text(encoding="utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, CONFIG_MODE)
        os.fchmod(fd, CONFIG_MODE)  # the umask only removes bits: 0640 exactly, whatever it is
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(template)
    except PermissionError:
        raise ConfigError(f"{path}: cannot write the config here",
                          hint="create it as root (install -m 0640 -o root -g astrowatch config.yaml "
                               f"{path}), then run init again") from None


def _tighten(path: Path) -> None:
    """An existing config the caller owns loses its group-write and every "other" bit."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid() or not mode & 0o027:
        return
    new = mode & 0o750 & ~stat.S_IWGRP
    os.chmod(path, new)
    print(f"tightened {path} from {mode:04o} to {new:04o} (the config is the daemon's: the group reads it, "
          "nobody else)")


def _config_path(args: argparse.Namespace) -> tuple[Path, bool]:
    """(the config to use, whether it was named by --config / $ASTROWATCH_CONFIG)."""
    from astrowatch.core.config import CONFIG_ENV

    named = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if named:
        return Path(named), True
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    return root / "config.yaml", False


def _next_step(config_path: Path, named: bool, args: argparse.Namespace) -> str:
    from astrowatch.core.config import CONFIG_ENV

    if not named:
        return f"astrowatch run --config {config_path}"
    if getattr(args, "config", None):
        env = os.environ.get(CONFIG_ENV)
        if env and Path(env).resolve() == config_path.resolve():
            return "astrowatch run   (or: systemctl enable --now astrowatch)"
        return f"astrowatch run --config {config_path}   (or: systemctl enable --now astrowatch)"
    return f"astrowatch run   (the config comes from ${CONFIG_ENV}; or: systemctl enable --now astrowatch)"


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.sharing import group_name, share_tree

    config_path, named = _config_path(args)
    if config_path.exists():
        print(f"{'using' if named else 'kept existing'} {config_path}")
        _tighten(config_path)
    else:
        _write_template(config_path)
        print(f"wrote {config_path}")
    if named and args.dir != ".":
        print(f"note: {args.dir} is not used: the data folder is data_dir from {config_path}")
    config = load_config(config_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    skipped = share_tree(layout)
    group = group_name(layout.root.stat().st_gid)
    print(f"data folders ready under {config.data_dir} (group {group}: folders rwx + setgid, state/ read-only)")
    for path in skipped[:5]:
        print(f"warning: could not share {path} with the group (not its owner): run init as its owner")
    print(f"next: {_next_step(config_path, named, args)}")
    return 0
