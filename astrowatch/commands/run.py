"""``astrowatch run``: the daemon in the foreground."""

from __future__ import annotations

import argparse


def start(args: argparse.Namespace, *, drain: bool, timeout: float | None = None) -> int:
    from astrowatch.runtime.daemon import Daemon
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import load_service_config

    config = load_service_config(args.config)
    setup_logging(config.log.level, getattr(args, "log_format", None) or config.log.format)
    return Daemon(config, drain=drain, drain_timeout=timeout).run()


def main(args: argparse.Namespace) -> int:
    return start(args, drain=False)
