"""``astrowatch review list|approve|reject|redo``: the same as moving the file by hand.

The command moves the inbox image (with its sidecars) into ``approved/``, ``rejected/`` or
``redo/``; the daemon acts on it exactly as on a reviewer's move (at its next start if it is
not running).  ``redo --set section.key=value`` (the spelling of ``generate``/``enhance``, e.g.
``astro.style=cosmique``, ``sdxl.steps=40``) first edits the sidecar's ``params``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

FOLDER = {"approve": "approved", "reject": "rejected", "redo": "redo"}


def _inbox_item(ledger, layout, item: str):  # noqa: ANN001
    from ..errors import NotFound
    from ..review import job_id_from_name

    if os.sep in item or item.lower().endswith((".png", ".webp", ".jpg", ".jpeg")):
        job_id = job_id_from_name(Path(item))
        if not job_id:
            raise NotFound(f"{item}: not an astrowatch result name (expected <name>.<job id>.png/.webp/.jpg)")
        item = job_id
    job = ledger.find(item)
    if job.state != "inbox":
        raise NotFound(f"job {job.id} is not waiting in the inbox (state: {job.state})")
    image = layout.inbox_dir(job.user) / (job.result or {}).get("image", "")
    if not image.is_file():
        raise NotFound(f"{layout.rel(image)} is not in the inbox any more (already moved?)")
    return job, image


def _move(image: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem = image.name.rsplit(".", 1)[0]
    for suffix in (".json", ".txt"):  # sidecars first, image last (the daemon acts on the image)
        side = image.with_name(stem + suffix)
        if side.exists():
            os.replace(side, dest_dir / side.name)
    os.replace(image, dest_dir / image.name)
    return dest_dir / image.name


# The sections whose keys a redo may override, per job kind (the params are flat: "steps").
REDO_SECTIONS = {"astro": ("astro", "sdxl", "sdapi", "openai", "fake"), "enhance": ("enhance", "sdxl", "sdapi", "fake")}
JOB_KEYS = ("seed",)  # read by the pipeline, not a config key


def redo_overrides(config, kind: str, pairs: list[str]) -> dict:  # noqa: ANN001
    """``--set astro.style=cosmique`` -> ``{"style": "cosmique"}``: the same ``SECTION.KEY`` spelling
    as ``generate``/``enhance``; a key the job cannot use is refused with the valid ones."""
    from ..config import parse_set, settable_keys, unknown_set_key

    sections = REDO_SECTIONS[kind]
    valid = settable_keys(config.model_dump(mode="json", exclude={"source"}), sections)
    valid += [f"{kind}.{key}" for key in JOB_KEYS]
    overrides = {}
    for pair in pairs:
        parts, value = parse_set(pair)
        if ".".join(parts) not in valid:
            raise unknown_set_key(".".join(parts), valid)
        overrides[parts[-1]] = value
    return overrides


def _edit_sidecar(sidecar_path: Path, what: str, edit: Callable[[dict], None]) -> dict:
    """Read-modify-write the result's sidecar (atomically: the daemon may read it as soon as the
    image moves).  An unreadable one is a clear error naming the file."""
    from ..errors import NotFound
    from ..imageio import atomic_write_json, read_json_or_none

    data = read_json_or_none(sidecar_path)
    if not isinstance(data, dict):
        raise NotFound(f"{sidecar_path.name}: {what} needs the result's readable .json sidecar in the inbox")
    edit(data)
    atomic_write_json(sidecar_path, data)
    return data


def _apply_sets(sidecar_path: Path, overrides: dict) -> dict:
    data = _edit_sidecar(sidecar_path, "--set", lambda d: d.setdefault("params", {}).update(overrides))
    return data["params"]


def _force(sidecar_path: Path) -> None:
    """``approve --force``: ``"force": true`` in the sidecar, which the daemon reads with the decision."""
    _edit_sidecar(sidecar_path, "--force", lambda d: d.update(force=True))


def main(args) -> int:  # noqa: ANN001
    from ..config import load_config
    from ..errors import NotFound
    from ..layout import Layout
    from ..ledger_readonly import open_for_reading

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
        jobs = ledger.by_state("inbox")
        rows = [{"job_id": j.id, "user": j.user, "kind": j.kind,
                 "image": f"inbox/{j.user}/{(j.result or {}).get('image')}"} for j in jobs]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print("\n".join(f"{r['job_id']}  {r['kind']:<8} {r['image']}" for r in rows) or "inbox is empty")
        return 0
    items = args.item if isinstance(args.item, list) else [args.item]
    for item in items:
        job, image = _inbox_item(ledger, layout, item)
        if args.action == "redo" and args.set:
            _apply_sets(image.with_suffix(".json"), redo_overrides(config, job.kind, args.set))
        if args.action == "approve" and getattr(args, "force", False):
            _force(image.with_suffix(".json"))
        dest = _move(image, layout.root / FOLDER[args.action])
        print(f"{job.id}: moved to {layout.rel(dest)}; the daemon will {args.action} it")
    return 0
