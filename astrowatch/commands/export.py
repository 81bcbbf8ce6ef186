"""``astrowatch export USER --out FILE.zip``: everything stored about a person, in one zip (see
:mod:`astrowatch.runtime.personal` and ``docs/personal-data.md``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.personal import export
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import check_user_name

    config = load_config(args.config)
    data = export(config, check_user_name(args.user))
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # personal data: owner only
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, out)
    print(f"{out}: {len(data)} bytes")
    return 0
