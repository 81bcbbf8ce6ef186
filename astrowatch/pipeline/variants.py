"""Several variants of one chart in one job (``astro.variants``), and how their files are named.

A job with N > 1 variants publishes, for each ``k`` in 1..N, ``<stem>.v<k>.png`` (+ its own
``.json`` sidecar with its seed, and ``.txt``), and a contact sheet ``<stem>.sheet.png`` to look
at: names that sort together in the inbox.  Variant 1 has the chart's seed (so N = 1 is the one
image of before); the others are derived from it, so the same chart gives the same N images.
Moving one variant into ``approved/`` picks it (:mod:`astrowatch.review.reviewer`).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.storage.ledger import Job

MAX_VARIANTS = 8
SHEET = "sheet"
VARIANTS_KEY = "variants"  # in a job's result: [{"variant": k, "image", "seed", "sha256"}]
REJECTED_KEY = "rejected_variants"  # in a job's result: the variants moved into rejected/ one by one
PART = re.compile(r"\.([0-9a-f]{12})\.(v[1-8]|sheet)$")  # <stem>.<job id>.v<k> / .sheet


def variant_seeds(seed: int, n: int) -> list[int]:
    """``n`` seeds: the chart's seed first, then seeds derived from it (stable across runs)."""
    seeds = [int(seed)]
    for k in range(2, n + 1):
        digest = hashlib.sha256(f"astrowatch-variant:{int(seed)}:{k}".encode()).digest()
        seeds.append(int.from_bytes(digest[:4], "big"))
    return seeds


def variant_stem(stem: str, k: int) -> str:
    return f"{stem}.v{k}"


def sheet_stem(stem: str) -> str:
    return f"{stem}.{SHEET}"


def part_of_name(name: str) -> int | str | None:
    """``3`` for ``theme_x.<job>.v3.png``, ``"sheet"`` for the contact sheet, None otherwise."""
    m = PART.search(name.rsplit(".", 1)[0] if "." in name else name)
    if m is None:
        return None
    return SHEET if m.group(2) == SHEET else int(m.group(2)[1:])


def job_variants(job: Job) -> list[dict[str, Any]]:
    """The variants recorded in the job's result (empty for a one-image job)."""
    found = (job.result or {}).get(VARIANTS_KEY)
    return [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []


def variant_entry(job: Job, k: int) -> dict[str, Any] | None:
    return next((v for v in job_variants(job) if v.get("variant") == k), None)


def contact_sheet(images: list[Image], *, cell: int = 256) -> Image:
    """The variants side by side (at most 4 a row), numbered as their files are."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    cols = min(len(images), 4)
    rows = (len(images) + cols - 1) // cols
    pad, label = 8, 20
    sheet = PILImage.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad + label) + pad), (24, 24, 32))
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images):
        thumb = img.convert("RGB")
        thumb.thumbnail((cell, cell))
        x = pad + (i % cols) * (cell + pad)
        y = pad + (i // cols) * (cell + pad + label)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + label + (cell - thumb.height) // 2))
        draw.text((x + 2, y + 3), f"v{i + 1}", fill=(240, 240, 240))
    return sheet
