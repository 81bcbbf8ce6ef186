"""``astrowatch webhooks list | retry ID | test URL``: the webhook outbox, from the command line.

``list`` reads the ledger read-only (any member of the service's group); ``retry`` makes a message
due again for its endpoints (it keeps its ``webhook-id``: the receiver can drop a duplicate) and
writes the ledger, so it runs as the service user; the running daemon's sender picks it up within a
second.  ``test`` signs and sends one ``webhook.test`` message to a configured endpoint now,
without the ledger, and prints what the receiver answered.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from astrowatch.core.errors import ConfigError, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.settings import load_config

    config = load_config(args.config)
    if args.action == "list":
        return _list(config, args)
    if args.action == "retry":
        return _retry(config, args)
    return _test(config, args.url)


def _list(config: Config, args: argparse.Namespace) -> int:
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading
    from astrowatch.storage.outbox import Delivery

    ledger = open_for_reading(Layout(config.data_dir))
    rows = ledger.deliveries(state=Delivery.FAILED if args.failed else None, limit=args.limit)
    rows.sort(key=lambda r: (r["state"] != Delivery.FAILED, -r["seq"]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no webhook messages" + (" failed" if args.failed else ""))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"]))
        due = "" if r["state"] != Delivery.PENDING else \
            f"  next try {time.strftime('%H:%M:%S', time.localtime(r['next_at']))}"
        print(f"{r['state']:<9} {r['msg_id']}  #{r['seq']:<6} {r['type']:<15} {r['user'] or '-':<12} "
              f"{r['endpoint']}  attempts {r['attempts']}  {when}{due}"
              + (f"  ({r['last_error']})" if r["last_error"] else ""))
    return 0


def _retry(config: Config, args: argparse.Namespace) -> int:
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

    layout = Layout(config.data_dir)
    if not layout.ledger_path.exists():
        raise NotFound(f"no ledger at {layout.ledger_path}")
    n = Ledger(layout.ledger_path).retry_delivery(args.id, args.url)
    if n == 0:
        raise NotFound(f"no delivered or failed message {args.id!r}" + (f" for {args.url}" if args.url else ""),
                       hint="'astrowatch webhooks list' shows the messages; pending ones are retried already")
    print(f"{args.id}: due again for {n} endpoint(s); the daemon sends it within a second")
    return 0


def _test(config: Config, url: str) -> int:
    from astrowatch.runtime.webhooks import send_test
    from astrowatch.storage.outbox import new_msg_id

    hooks = [h for h in config.webhooks if h.url == url]
    if not hooks:
        raise ConfigError(f"{url} is not in the config's webhooks list",
                          hint="add it with its secret_file, then test it (the secret signs the message)")
    now = datetime.now(UTC)
    payload = {"type": "webhook.test", "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "data": {"note": "a test message from astrowatch webhooks test"}}
    msg_id = new_msg_id()
    ok, what = send_test(hooks[0], config.events, payload, msg_id)
    print(f"{url}: {what} (webhook-id {msg_id})")
    return 0 if ok else 1
