"""What the review page shows beside the inbox: previews of originals, the chart wheel, the login
rule.  Plain Python, tested without a browser; :mod:`astrowatch.ui.page` only draws them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.review.inbox import InboxItem
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


# -- the training caption of an enhance result: a sentence and a tag list beside the description ----
def caption_fields(description: str, sidecar: dict[str, Any], trigger: str) -> tuple[str, str]:
    """(sentence, tags one per line) read from line 1 of ``description`` (see
    :mod:`astrowatch.review.captions`): what the page's caption and tag boxes start from."""
    from astrowatch.review.captions import current_parts

    parts = current_parts(description, sidecar, trigger)
    return parts.caption, "\n".join(parts.tags)


def description_with_fields(description: str, sentence: str, tags_text: str, trigger: str) -> str:
    """``description`` with line 1 rebuilt from the page's sentence and tag boxes (tags one per
    line or comma-separated, in the order given; empty lines dropped), the technical lines kept.
    A tag or sentence out of bounds is an :class:`~astrowatch.core.errors.InputError`."""
    from astrowatch.review.captions import CaptionParts, check_caption, parse_tag_list, with_line

    parts = CaptionParts(trigger.strip(), check_caption(sentence), parse_tag_list(tags_text))
    return with_line(description, parts.text())


def proposed_tags_text(sidecar: dict[str, Any]) -> str:
    """``long hair 0.92 · outdoors 0.61``: the tagger's proposal with scores, for the page."""
    from astrowatch.review.captions import proposed

    tags = [t for t in proposed(sidecar).get("tags") or [] if isinstance(t, dict)]
    return " · ".join(f"{t.get('tag')} {float(t.get('score') or 0):.2f}" for t in tags)


def final_description(initial: str, description: str, sentence: str | None, tags_text: str | None,
                      sidecar: dict[str, Any], trigger: str) -> str:
    """What a decision or a save writes: the description box, with line 1 rebuilt from the
    sentence and tag boxes when those were edited (they differ from what the box's, and the
    file's, line 1 says).  ``initial`` is the ``.txt`` the boxes were filled from; ``None``
    boxes (an astro result) leave the description as it is."""
    if sentence is None or tags_text is None:
        return description
    from astrowatch.review.captions import check_caption, parse_tag_list

    fields = (check_caption(sentence), "\n".join(parse_tag_list(tags_text)))
    if fields in (caption_fields(description, sidecar, trigger), caption_fields(initial, sidecar, trigger)):
        return description
    return description_with_fields(description, sentence, tags_text, trigger)


# -- several variants of one chart (astro.variants): side by side, one click to pick -----------------
@dataclass(frozen=True)
class VariantCell:
    """One variant as the page draws it: its image, a caption, and the Pick button's label and key."""

    k: int
    image: Path
    caption: str
    button: str
    key: str


def variant_cells(item: InboxItem) -> list[VariantCell]:
    """The job's variants still waiting in the inbox (none for a one-image job), in order: each
    with ``Pick vK``, whose click makes exactly the move of ``astrowatch review pick JOB K``."""
    cells = []
    for v in sorted(item.variants(), key=lambda v: v.k):
        seed = f" · seed {v.seed}" if v.seed is not None else ""
        cells.append(VariantCell(v.k, v.image, f"v{v.k}{seed}", f"Pick v{v.k}", f"pick-{item.job.id}-{v.k}"))
    return cells


def variant_columns(count: int) -> int:
    """How many columns the variants take side by side (at most 4 a row, like the contact sheet)."""
    return max(1, min(count, 4))


def pick_caption(initial: str | None, description: str | None) -> str | None:
    """The description a pick saves into the picked variant's ``.txt``: the box's text only when the
    reviewer edited it (the box is filled from the contact sheet's ``.txt``, whose text must not
    replace a variant's own)."""
    if description is None or description == initial:
        return None
    return description
