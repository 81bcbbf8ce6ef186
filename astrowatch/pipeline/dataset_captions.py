"""What the models proposed vs what was filed, per dataset image: ``datasets/<user>/
astrowatch-captions.json`` (trainers read only images and ``.txt``; kohya and Fluxgym ignore it).

Written on every approval (:func:`astrowatch.pipeline.delivery.file_into_dataset`) and by
``astrowatch dataset recaption``, which uses it to keep a reviewer's edit: an image whose filed
line differs from the proposed one, or whose ``.txt`` changed since, was edited.  Read and written
through :mod:`astrowatch.storage.safefs` (the dataset folder is in the shared tree).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.storage import safefs

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.storage.layout import Layout

RECORD_NAME = "astrowatch-captions.json"
RECORD_MAX_BYTES = 32 * 1024 * 1024  # about 100 000 images
FORMAT = 1


def record_path(layout: Layout, user: str) -> Path:
    return layout.dataset_dir(user) / RECORD_NAME


def read_record(layout: Layout, user: str) -> dict[str, dict[str, Any]]:
    """``{image file name: {"job_id", "proposed", "filed", ...}}``; empty when absent or unreadable."""
    data = safefs.read_json_or_none(record_path(layout, user), root=layout.root, max_bytes=RECORD_MAX_BYTES)
    images = data.get("images") if isinstance(data, dict) else None
    return {k: v for k, v in images.items() if isinstance(k, str) and isinstance(v, dict)} \
        if isinstance(images, dict) else {}


def write_record(layout: Layout, user: str, images: dict[str, dict[str, Any]]) -> None:
    safefs.write_json(record_path(layout, user), {"format": FORMAT, "images": images}, root=layout.root)


def note_filed(layout: Layout, user: str, image_name: str, *, job_id: str | None, proposed: str, filed: str,
               models: dict[str, Any] | None = None) -> None:
    """Record one image's proposed and filed line 1."""
    images = read_record(layout, user)
    entry: dict[str, Any] = {"job_id": job_id, "proposed": proposed, "filed": filed, "at": round(time.time(), 3)}
    if models:
        entry["models"] = models
    images[image_name] = entry
    write_record(layout, user, images)


def was_edited(entry: dict[str, Any] | None, current: str) -> bool | None:
    """Did a person change this caption: filed != proposed, or the ``.txt`` changed since it was
    filed.  ``None`` when nothing says (no record)."""
    if not entry or not isinstance(entry.get("filed"), str) or not isinstance(entry.get("proposed"), str):
        return None
    filed, proposed = str(entry["filed"]).strip(), str(entry["proposed"]).strip()
    return filed != proposed or current.strip() != filed
