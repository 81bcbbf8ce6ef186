"""``astrowatch worker [--device cuda:N] [--name NAME]``: a GPU host's Celery worker (executor: celery)."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.remote_worker import serve
    from astrowatch.runtime.settings import load_service_config

    config = load_service_config(args.config)
    setup_logging(config.log.level, getattr(args, "log_format", None) or config.log.format)
    return serve(config, device=args.device, name=args.name)
