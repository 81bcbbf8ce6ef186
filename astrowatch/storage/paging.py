"""Opaque cursors for paged reads of the ledger (``GET /api/inbox``, ``review list``, ``jobs list``).

A cursor is the key of the last item of a page, ``(created_at, id)`` — the stable order of
:meth:`astrowatch.storage.ledger.Ledger.page` — written ``<created_at>-<job id>`` (the float as
``repr`` writes it, so it reads back exactly).  Clients should treat it as opaque and pass back what
the ``Link: <...>; rel="next"`` header (or the CLI) gave; any string matching :data:`PATTERN` is a
valid cursor (the page of the items after that key), so the OpenAPI schema can say exactly what is
accepted.  An item decided between two pages simply leaves; nothing is skipped or repeated.
"""

from __future__ import annotations

import re

from astrowatch.core.errors import InputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,17})?-[0-9a-f]{12}$"  # <created_at>-<job id>
MAX_LENGTH = 43
_CURSOR = re.compile(PATTERN)


def encode(key: tuple[float, str]) -> str:
    return f"{key[0]!r}-{key[1]}"


def decode(cursor: str) -> tuple[float, str]:
    """The key in ``cursor``; :class:`InputError` for anything that does not match :data:`PATTERN`."""
    if not _CURSOR.fullmatch(cursor):
        raise InputError("invalid cursor: pass back the one the previous page gave")
    created, _, job_id = cursor.partition("-")
    return float(created), job_id


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit
