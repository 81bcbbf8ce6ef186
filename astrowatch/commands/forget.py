"""``astrowatch forget USER [--dry-run] [--yes] [--keep-loras]``: erase a person (see
:mod:`astrowatch.runtime.personal` and ``docs/personal-data.md``)."""

from __future__ import annotations

import argparse
import json
import sys


def main(args: argparse.Namespace) -> int:
    from astrowatch.core.errors import AstrowatchError
    from astrowatch.runtime.personal import forget
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import check_user_name

    config = load_config(args.config)
    user = check_user_name(args.user)
    if args.dry_run:
        report = forget(config, user, dry_run=True, keep_loras=args.keep_loras)
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False))
            return 0
        print(f"{user}: {report['jobs']} job(s) in the ledger; would remove:")
        for path in [*report["paths"], *report["loras"]]:
            print(f"  {path}")
        for name, n in report["logs"].items():
            print(f"  {n} line(s) of logs/{name}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise AstrowatchError("forget needs --yes when not run from a terminal")
        answer = input(f"Erase everything stored about {user!r}? This cannot be undone. Type the name to confirm: ")
        if answer.strip() != user:
            print("nothing erased", file=sys.stderr)
            return 1

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    report = forget(config, user, keep_loras=args.keep_loras, say=say)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"erased as {report['person']}: {report['jobs']} job(s) tombstoned, {len(report['removed'])} "
              f"file(s)/folder(s) removed, {sum(report['log_lines_dropped'].values())} log line(s) dropped; "
              "report appended to logs/erasures.jsonl")
        if report.get("warning"):
            print(f"warning: {report['warning']}", file=sys.stderr)
    return 0
