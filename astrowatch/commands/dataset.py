"""``astrowatch dataset recaption USER [--dry-run] [--force]``: re-caption a user's filed dataset
(``datasets/<user>/``) with the configured ``caption:`` models, loaded once.

An image whose caption a person edited (at review, or in the ``.txt`` since) keeps it unless
``--force``: ``datasets/<user>/astrowatch-captions.json`` records what the models proposed and
what was filed (:mod:`astrowatch.pipeline.dataset_captions`); an image filed before that record
existed is compared with its job's proposed line in the ledger.  Everything in the shared tree is
read and written through :mod:`astrowatch.storage.safefs`.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout

T = TypeVar("T")
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


def progress(items: list[T], what: str) -> Iterator[T]:
    """A progress bar on stderr when it is a terminal (nothing otherwise: logs stay clean)."""
    if not sys.stderr.isatty():
        yield from items
        return
    yield from _plain_bar(items, what)


def _plain_bar(items: list[T], what: str, width: int = 30) -> Iterator[T]:
    total = len(items)
    for i, item in enumerate(items, 1):
        yield item
        done = width * i // max(total, 1)
        sys.stderr.write(f"\r{what} [{'#' * done}{'.' * (width - done)}] {i}/{total}")
        sys.stderr.flush()
    if total:
        sys.stderr.write("\n")


def dataset_images(layout: Layout, user: str) -> list[Path]:
    """The regular image files of ``datasets/<user>/`` (links and folders skipped), by name."""
    from astrowatch.storage import safefs

    folder = layout.dataset_dir(user)
    try:
        with safefs.open_dir(folder, layout.root) as dfd:
            names = sorted(os.listdir(dfd))
            return [folder / n for n in names if n.lower().endswith(IMAGE_SUFFIXES)
                    and stat.S_ISREG(os.stat(n, dir_fd=dfd, follow_symlinks=False).st_mode)]
    except safefs.Unreadable:
        return []


def ledger_proposals(layout: Layout, config: Config, user: str) -> dict[str, tuple[str, str]]:
    """``{dataset image stem: (job id, proposed line 1)}`` from the user's filed jobs (for images
    filed before the record existed); empty without a ledger."""
    from astrowatch.core.errors import NotFound
    from astrowatch.core.jobs import JobState
    from astrowatch.pipeline.delivery import caption_line
    from astrowatch.storage.ledger_readonly import open_for_reading

    try:
        ledger = open_for_reading(layout)
    except NotFound:
        return {}
    out: dict[str, tuple[str, str]] = {}
    jobs = sorted((j for j in ledger.by_state(JobState.FILED) if j.user == user), key=lambda j: j.updated_at)
    for job in jobs:
        stem = job.source_name.rsplit(".", 1)[0]
        line = caption_line(str((job.result or {}).get("description") or ""), config.dataset.trigger_word)
        for name in (stem, f"{stem}-{job.id}"):
            out[name] = (job.id, line)
    return out


def _decode(layout: Layout, config: Config, path: Path) -> Any:
    from PIL import Image

    from astrowatch.storage import safefs

    data = safefs.read_bytes(path, root=layout.root, max_bytes=config.limits.max_image_bytes, what="image").data
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _sdapi(config: Config, image_of: Callable[[], Any]) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """The WebUI's interrogate, for ``captioner: sdapi`` (started at the first call)."""
    backend: list[Any] = []

    def ask(model: str) -> tuple[str, dict[str, Any]]:
        from astrowatch.backends.base import EnhanceTask
        from astrowatch.backends.registry import create_backend

        if not backend:
            backend.append(create_backend("sdapi", "enhance", config))
        task = EnhanceTask(job_id="recaption", user="", image=image_of(), source_name="", params={}, seed=0)
        return str(backend[0].interrogate(task, model)), {"name": "sdapi", "model": model}
    return ask


def main(args: argparse.Namespace) -> int:
    from astrowatch.backends.caption.text import effective_settings
    from astrowatch.core.errors import InputError, UnsafePathError
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout, check_user_name

    config = load_config(args.config)
    layout = Layout(config.data_dir)
    try:
        user = check_user_name(args.user)
    except UnsafePathError as exc:
        raise InputError(str(exc), hint="a user is the name of a folder in Utilisateurs/") from None
    settings = effective_settings(config, str(config.enhance.backend), {})
    if settings.captioner == "none" and settings.tagger == "none":
        raise InputError("caption.captioner and caption.tagger are none: nothing to re-caption with",
                         hint="configure caption.captioner (blip, florence2, openai, sdapi) and/or caption.tagger: wd14")
    images = dataset_images(layout, user)
    if not images:
        print(f"{layout.rel(layout.dataset_dir(user))}: no dataset images")
        return 0
    return recaption(config, layout, user, images, settings, dry_run=args.dry_run, force=args.force)


def plan(layout: Layout, config: Config, user: str, images: Iterable[Path],
         force: bool) -> tuple[list[tuple[Path, str | None]], list[tuple[Path, str]]]:
    """(to re-caption as (image, job id), kept as (image, why))."""
    from astrowatch.pipeline.dataset_captions import read_record, was_edited
    from astrowatch.storage import safefs

    record = read_record(layout, user)
    from_ledger = ledger_proposals(layout, config, user)
    todo: list[tuple[Path, str | None]] = []
    kept: list[tuple[Path, str]] = []
    for image in images:
        text = safefs.read_text_or_none(image.with_suffix(".txt"), root=layout.root) or ""
        current = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        entry = record.get(image.name)
        job_id = entry.get("job_id") if entry else None
        edited = was_edited(entry, current)
        if edited is None and image.stem in from_ledger:
            job_id, proposed = from_ledger[image.stem]
            edited = current != proposed.strip()
        if force or edited is False:
            todo.append((image, job_id if isinstance(job_id, str) else None))
        else:
            kept.append((image, "edited by a reviewer" if edited else "no record of what was proposed"))
    return todo, kept


def recaption(config: Config, layout: Layout, user: str, images: list[Path], settings: Any, *,
              dry_run: bool, force: bool) -> int:
    from astrowatch.backends.caption.service import CaptionService
    from astrowatch.pipeline.captions import model_captions
    from astrowatch.pipeline.dataset_captions import read_record, write_record
    from astrowatch.storage import safefs

    todo, kept = plan(layout, config, user, images, force)
    for image, why in kept:
        print(f"kept {layout.rel(image.with_suffix('.txt'))}: {why} (--force re-captions it)")
    if dry_run:
        for image, _job in todo:
            print(f"would re-caption {layout.rel(image.with_suffix('.txt'))}")
        print(f"{len(todo)} to re-caption, {len(kept)} kept (dry run: nothing written)")
        return 0
    service = CaptionService(config)
    current: list[Any] = [None]
    try:
        if todo:
            service.start()  # the models, loaded once for every image
        record = read_record(layout, user)
        done = 0
        for image, job_id in progress(todo, "re-captioning"):
            current[0] = _decode(layout, config, image)
            captions = model_captions(config, settings, current[0], lambda: service,
                                      _sdapi(config, lambda: current[0]), None)
            line = str(captions["line"])
            safefs.write_text(image.with_suffix(".txt"), line + "\n", root=layout.root)
            record[image.name] = {"job_id": job_id, "proposed": line, "filed": line, "recaptioned": True,
                                  "models": {"captioner": captions["captioner"], "tagger": captions["tagger"]}}
            done += 1
            if done % 10 == 0:
                write_record(layout, user, record)
        if todo:
            write_record(layout, user, record)
    finally:
        service.close()
    print(f"re-captioned {len(todo)}, kept {len(kept)} in {layout.rel(layout.dataset_dir(user))}")
    return 0
