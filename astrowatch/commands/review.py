"""``astrowatch review list|approve|reject|redo``: the same as moving the file by hand.

``review list`` prints one page (``--limit``, default 100, oldest first; ``--user``, ``--kind``)
and the ``--cursor`` of the next one.  The command moves the inbox image (with its sidecars) into ``approved/``, ``rejected/`` or
``redo/``; the daemon acts on it exactly as on a reviewer's move (at its next start if it is
not running).  ``redo --set section.key=value`` (the spelling of ``generate``/``enhance``, e.g.
``astro.style=cosmique``, ``sdxl.steps=40``) first edits the sidecar's ``params``.
"""

from __future__ import annotations

import argparse
import json

from astrowatch.commands.jobs import page_rows, print_next
from astrowatch.core.jobs import Decision, JobState
from astrowatch.review.inbox import FOLDER, apply_sets, find_inbox_item, force, move, redo_overrides


def main(args: argparse.Namespace) -> int:
    from astrowatch.core.errors import NotFound
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading

    config = load_config(args.config)
    layout = Layout(config.data_dir)
    try:
        ledger = open_for_reading(layout)  # decisions are file moves: the daemon writes the ledger
    except NotFound:
        if args.action != "list":
            raise
        print("[]" if args.json else f"inbox is empty (no ledger yet under {layout.root})")
        return 0
    if args.action == "list":
        jobs, cursor = page_rows(ledger, JobState.INBOX, args)  # a page at a time, oldest first
        rows = [{"job_id": j.id, "user": j.user, "kind": j.kind,
                 "image": f"inbox/{j.user}/{(j.result or {}).get('image')}"} for j in jobs]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print("\n".join(f"{r['job_id']}  {r['kind']:<8} {r['image']}" for r in rows) or "inbox is empty")
        print_next("review list", cursor, json_mode=args.json)
        return 0
    items = args.item if isinstance(args.item, list) else [args.item]
    for item in items:
        job, image = find_inbox_item(ledger, layout, item)
        if args.action == Decision.REDO and args.set:
            apply_sets(image.with_suffix(".json"), redo_overrides(config, job.kind, args.set), root=layout.root)
        if args.action == Decision.APPROVE and getattr(args, "force", False):
            force(image.with_suffix(".json"), root=layout.root)
        dest = move(image, layout.root / FOLDER[args.action], root=layout.root)
        print(f"{job.id}: moved to {layout.rel(dest)}; the daemon will {args.action} it")
    return 0
