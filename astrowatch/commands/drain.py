"""``astrowatch drain``: process everything pending (inputs and decisions), then exit.

Exit status 0 when nothing is left (jobs waiting for an unavailable backend are reported, not
waited for), 1 when ``--timeout`` expired first.
"""

from __future__ import annotations

import argparse

from astrowatch.commands.run import start


def main(args: argparse.Namespace) -> int:
    return start(args, drain=True, timeout=args.timeout)
