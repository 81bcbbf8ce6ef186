"""``astrowatch drain``: process everything pending (inputs and decisions), then exit."""

from __future__ import annotations

import signal

from .run import start


def main(args) -> int:
    if args.timeout:
        def _expired(_signum, _frame):  # noqa: ANN001
            raise SystemExit("astrowatch drain: timeout expired with work still pending")

        signal.signal(signal.SIGALRM, _expired)
        signal.alarm(int(args.timeout))
    return start(args, drain=True)
