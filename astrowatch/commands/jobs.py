"""``astrowatch jobs list --state --user --kind --limit --cursor``: the detail behind ``status``.

One page of the jobs in a state, oldest first, read through an index of the ledger (read-only):
its cost does not grow with the history.  The next page's cursor is printed after the page (on
stderr with ``--json``, so stdout stays one JSON array).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from astrowatch.core.errors import InputError
from astrowatch.core.jobs import STATES


def page_rows(ledger: Any, state: str, args: argparse.Namespace) -> tuple[list[Any], str | None]:
    """The jobs of one page for ``args`` (``--user --kind --limit --cursor``) and the next cursor."""
    from astrowatch.storage import paging

    after = paging.decode(args.cursor) if args.cursor else None
    jobs, last = ledger.page(state, user=args.user, kind=args.kind, limit=paging.check_limit(args.limit), after=after)
    return jobs, (paging.encode(last) if last else None)


def print_next(command: str, cursor: str | None, *, json_mode: bool) -> None:
    if cursor is None:
        return
    text = f"next page: astrowatch {command} --cursor {cursor}"
    print(text, file=sys.stderr if json_mode else sys.stdout)


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading

    if args.state not in STATES:
        raise InputError(f"unknown state {args.state!r}; one of: {', '.join(STATES)}")
    ledger = open_for_reading(Layout(load_config(args.config).data_dir))
    jobs, cursor = page_rows(ledger, args.state, args)
    rows = [{"job_id": j.id, "user": j.user, "kind": j.kind, "state": j.state, "source": j.source,
             "attempts": j.attempts, "error": j.error,
             "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at)),
             "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.updated_at))} for j in jobs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(f"{r['job_id']}  {r['kind']:<8} {r['state']:<10} {r['updated']}  {r['source']}"
                        + (f"  ({r['error']})" if r["error"] else "") for r in rows) or f"no {args.state} jobs")
    print_next(f"jobs list --state {args.state}", cursor, json_mode=args.json)
    return 0
