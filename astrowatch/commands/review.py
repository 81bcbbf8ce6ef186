"""``astrowatch review list|approve|reject|redo|pick|caption|tags``: the same as moving the file by hand.

``review list`` prints one page (``--limit``, default 100, oldest first; ``--user``, ``--kind``)
and the ``--cursor`` of the next one.  The command moves the inbox image (with its sidecars) into ``approved/``, ``rejected/`` or
``redo/``; the daemon acts on it exactly as on a reviewer's move (at its next start if it is
not running).  ``redo --set section.key=value`` (the spelling of ``generate``/``enhance``, e.g.
``astro.style=cosmique``, ``sdxl.steps=40``) first edits the sidecar's ``params``.  ``caption``
and ``tags`` edit line 1 of an enhance result's ``.txt`` (what approval files), nothing else.
A job with several variants: ``pick ITEM K`` (or ``approve --variant K``) moves variant K; approve
without one is refused; reject moves the contact sheet (all rejected); ``redo --variant K`` redoes
from variant K's seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from astrowatch.commands.jobs import page_rows, print_next
from astrowatch.core.jobs import Decision, JobState
from astrowatch.review.inbox import FOLDER, InboxItem, apply_sets, find_inbox_item, force, move, redo_overrides


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
                 "image": f"inbox/{j.user}/{(j.result or {}).get('image')}",
                 **({"variants": [f"inbox/{j.user}/{v.get('image')}" for v in (j.result or {})["variants"]]}
                    if (j.result or {}).get("variants") else {})} for j in jobs]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print("\n".join(f"{r['job_id']}  {r['kind']:<8} {r['image']}" for r in rows) or "inbox is empty")
        print_next("review list", cursor, json_mode=args.json)
        return 0
    if args.action in ("caption", "tags"):
        return _edit(args, config, layout, ledger)
    items = args.item if isinstance(args.item, list) else [args.item]
    action = Decision.APPROVE if args.action == "pick" else Decision(args.action)
    for item in items:
        job, image = find_inbox_item(ledger, layout, item)
        image = _variant_image(InboxItem(job, image, layout.root), action, getattr(args, "variant", None))
        if action == Decision.REDO and args.set:
            apply_sets(image.with_suffix(".json"), redo_overrides(config, job.kind, args.set), root=layout.root)
        if action == Decision.APPROVE and getattr(args, "force", False):
            force(image.with_suffix(".json"), root=layout.root)
        dest = move(image, layout.root / FOLDER[action], root=layout.root)
        print(f"{job.id}: moved to {layout.rel(dest)}; the daemon will {action} it")
    return 0


def _edit(args: argparse.Namespace, config: Any, layout: Any, ledger: Any) -> int:
    """``review caption ITEM [--text T]`` / ``review tags ITEM [--set|--add|--remove|--move]``:
    without an edit, show the parts and the models' proposal."""
    from astrowatch.core.jobs import JobKind
    from astrowatch.review.captions import describe, edit_caption, parse_move, parse_tag_list

    job, image = find_inbox_item(ledger, layout, args.item)
    if job.kind != JobKind.ENHANCE:
        from astrowatch.core.errors import InputError

        raise InputError(f"job {job.id} is an {job.kind} result: only enhance results have training captions",
                         hint="edit an astro result's description in its .txt or on the review page")
    item = InboxItem(job, image, layout.root)
    trigger = config.dataset.trigger_word
    text = getattr(args, "text", None)
    tags = parse_tag_list(args.set_tags) if getattr(args, "set_tags", None) is not None else None
    add, remove = getattr(args, "add", []), getattr(args, "remove", [])
    move = [parse_move(m) for m in getattr(args, "move", [])]
    if text is not None or tags is not None or add or remove or move:
        edit_caption(item, trigger, caption=text, tags=tags, add=add, remove=remove, move=move)
    shown = describe(item, trigger)
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    print(f"{job.id}: {shown['line']}")
    if args.action == "caption":
        print(f"caption:  {shown['caption'] or '(none)'}")
        print(f"proposed: {shown['proposed'].get('caption') or '(none)'}")
    else:
        print("tags:     " + (", ".join(shown["tags"]) or "(none)"))
        scores = {t["tag"]: t["score"] for t in shown["proposed"]["tags"]}
        print("proposed: " + (", ".join(f"{t} ({s})" for t, s in scores.items()) or "(none)"))
    return 0


def _variant_image(item: InboxItem, action: Decision, variant: int | None) -> Path:
    """The image to move: variant ``variant`` of a job with several, else the job's own image
    (approving a job with several variants needs one: the contact sheet is not delivered)."""
    from astrowatch.core.errors import InputError

    if variant is None:
        if action == Decision.APPROVE and item.variants():
            ks = " ".join(str(v.k) for v in item.variants())
            raise InputError(f"job {item.job.id} has several variants ({ks}): say which one",
                             hint=f"astrowatch review pick {item.job.id} K (or approve --variant K)")
        return item.image
    return item.variant(variant).image
