"""What the review page shows beside the inbox: previews of originals, the chart wheel, the login
rule.  Plain Python, tested without a browser; :mod:`astrowatch.ui.page` only draws them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job


WHEEL_SIZE = 512


BROWSER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jfif", ".webp", ".gif", ".avif"})


def image_bytes(path: Path, config: Config, root: Path) -> bytes | None:
    """A shared-tree image's bytes for the page (a result, an original in a browser format), read
    through :mod:`astrowatch.storage.safefs`: ``None`` for a link, a FIFO, a file over
    ``limits.max_image_bytes`` or a missing one (the page never opens such a name itself)."""
    from astrowatch.storage.safefs import Unreadable, read_bytes

    try:
        return read_bytes(path, root=root, max_bytes=config.limits.max_image_bytes, what="image").data
    except (Unreadable, OSError):
        return None


def original_preview(path: Path, config: Config, root: Path) -> Any:
    """What the page shows for an original: its bytes where browsers render it, else (HEIC, TIFF,
    BMP) a decoded, oriented 1024 px preview; ``None`` if it cannot be read or decoded."""
    if path.suffix.lower() in BROWSER_SUFFIXES:
        return image_bytes(path, config, root)
    from astrowatch.core.errors import InputError
    from astrowatch.pipeline.preprocess import preprocess

    small = config.enhance.model_copy(update={"min_side": 1})
    try:
        image, _facts = preprocess(path, enhance=small, limits=config.limits, root=root)
    except InputError:
        return None
    image.thumbnail((1024, 1024))
    return image


def chart_wheel(config: Config, layout: Layout, job: Job) -> Any:
    """The chart wheel of an astro job, from its theme snapshot (a PIL image), or ``None``."""
    from astrowatch.backends.wheel.backend import render_wheel
    from astrowatch.chart.parse import parse_chart_bytes
    from astrowatch.core.errors import AstrowatchError
    from astrowatch.storage.safefs import read_bytes

    snapshot = layout.archive_dir(job.user, job.id) / job.source_name
    try:
        data = read_bytes(snapshot, root=layout.root, max_bytes=config.limits.max_json_bytes, what="theme").data
        chart = parse_chart_bytes(data, user=job.user, source=layout.rel(snapshot),
                                  max_bytes=config.limits.max_json_bytes, max_depth=config.limits.max_json_depth)
        return render_wheel(chart, size=WHEEL_SIZE, language=config.astro.language)
    except (AstrowatchError, OSError):
        return None


LOGIN_ENV = "ASTROWATCH_UI_LOGIN"  # set for the page: ask for the API token before showing anything


def login_required(config: Config, host: str) -> bool:
    """Beyond loopback the page asks for the API token (a login form): refuse to start without
    one (exit 78).  On loopback nothing changes."""
    from astrowatch.api.auth import is_loopback, load_token, require_token_off_loopback

    token = load_token(config)
    require_token_off_loopback(host, token, "astrowatch ui")
    required = not is_loopback(host)
    os.environ[LOGIN_ENV] = "1" if required else "0"
    return required
