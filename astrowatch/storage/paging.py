"""Opaque cursors for paged reads of the ledger (``GET /api/inbox``, ``review list``, ``jobs list``).

A cursor is the key of the last item of a page, ``(created_at, id)`` — the stable order of
:meth:`astrowatch.storage.ledger.Ledger.page` — as URL-safe base64 of a short JSON array.  Clients
must treat it as opaque: pass back what the ``Link: <...>; rel="next"`` header (or the CLI) gave.
An item decided between two pages simply leaves; nothing is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import json

from astrowatch.core.errors import InputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode(key: tuple[float, str]) -> str:
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[float, str]:
    """The key in ``cursor``; :class:`InputError` for anything this module did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw.decode())
        if isinstance(created, bool) or not isinstance(created, int | float) or not isinstance(job_id, str) \
                or len(job_id) > 64:
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InputError("invalid cursor: pass back the one the previous page gave") from None
    return float(created), job_id


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit
