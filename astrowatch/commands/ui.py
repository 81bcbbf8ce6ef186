"""``astrowatch ui [--host 127.0.0.1] [--port 8501]``: the review page (Streamlit, extra ``ui``).

The page only reads the ledger and moves files, exactly like a reviewer would: a button moves
the inbox image (sidecars first) into ``approved/``, ``rejected/`` or ``redo/`` with the helper
``astrowatch review`` uses, so the daemon stays the only place that acts — now, or at its next
start when it is stopped.  The helpers below are the page's logic (tested without a browser);
``astrowatch/ui_app.py`` only draws them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..imageio import read_json_or_none, read_text_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..layout import Layout
    from ..ledger import Job, Ledger

APP = Path(__file__).resolve().parents[1] / "ui_app.py"
WHEEL_SIZE = 512


@dataclass
class InboxItem:
    job: Job
    image: Path

    @property
    def stem(self) -> str:
        return self.image.name.rsplit(".", 1)[0]

    @property
    def caption_path(self) -> Path:
        return self.image.with_name(self.stem + ".txt")

    @property
    def sidecar_path(self) -> Path:
        return self.image.with_name(self.stem + ".json")

    def caption(self) -> str:
        return read_text_or_none(self.caption_path) or ""

    def sidecar(self) -> dict[str, Any]:
        data = read_json_or_none(self.sidecar_path)
        return data if isinstance(data, dict) else {}

    def bounce_note(self) -> str | None:
        """Why the daemon put a decision back (``<stem>.error.txt``), if it did."""
        return (read_text_or_none(self.image.with_name(self.stem + ".error.txt")) or "").strip() or None


def inbox_items(layout: Layout, ledger: Ledger) -> list[InboxItem]:
    """Results waiting for review whose image is still in ``inbox/<user>/`` (oldest first)."""
    items = []
    for job in ledger.by_state("inbox"):
        name = (job.result or {}).get("image")
        if not name:
            continue
        image = layout.inbox_dir(job.user) / name
        if image.is_file() and not image.is_symlink():
            items.append(InboxItem(job, image))
    return items


def original_path(layout: Layout, ledger: Ledger, job: Job) -> Path | None:
    """The archived input of an enhance job (a redo reads its parent's copy)."""
    from ..errors import NotFound

    current: Job | None = job
    while current is not None:
        path = layout.archive_dir(current.user, current.id) / current.source_name
        if path.is_file() and not path.is_symlink():
            return path
        try:
            current = ledger.get(current.parent_id) if current.parent_id else None
        except NotFound:
            return None
    return None


BROWSER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jfif", ".webp", ".gif", ".avif"})


def original_preview(path: Path, config: Config) -> Any:
    """What the page shows for an original: the file where browsers render it, else (HEIC, TIFF,
    BMP) a decoded, oriented 1024 px preview; ``None`` if it cannot be decoded."""
    if path.suffix.lower() in BROWSER_SUFFIXES:
        return str(path)
    from ..errors import InputError
    from ..pipeline.preprocess import preprocess

    small = config.enhance.model_copy(update={"min_side": 1})
    try:
        image, _facts = preprocess(path, enhance=small, limits=config.limits)
    except InputError:
        return None
    image.thumbnail((1024, 1024))
    return image


def chart_wheel(config: Config, layout: Layout, job: Job) -> Any:
    """The chart wheel of an astro job, from its theme snapshot (a PIL image), or ``None``."""
    from ..backends.wheel import render_wheel
    from ..chart.parse import parse_chart_file
    from ..errors import AstrowatchError

    snapshot = layout.archive_dir(job.user, job.id) / job.source_name
    if not snapshot.is_file():
        return None
    try:
        chart = parse_chart_file(snapshot, user=job.user, max_bytes=config.limits.max_json_bytes,
                                 max_depth=config.limits.max_json_depth)
        return render_wheel(chart, size=WHEEL_SIZE, language=config.astro.language)
    except AstrowatchError:
        return None


def save_caption(item: InboxItem, text: str) -> bool:
    """Write the description beside the image; ``False`` when nothing changed."""
    from ..imageio import atomic_write_text

    text = text.rstrip("\n") + "\n"
    if text == item.caption():
        return False
    atomic_write_text(item.caption_path, text)
    return True


def parse_params(text: str) -> dict[str, Any]:
    from ..errors import InputError

    try:
        params = json.loads(text)
    except ValueError as exc:
        raise InputError(f"parameters are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(params, dict):
        raise InputError("parameters must be a JSON object, e.g. {\"steps\": 40}")
    return params


def decide(layout: Layout, item: InboxItem, decision: str, *, caption: str | None = None,
           params: dict[str, Any] | None = None) -> Path:
    """Save the caption, write redo params into the sidecar, then move the image like a reviewer."""
    from ..errors import NotFound
    from ..imageio import atomic_write_json
    from .review import FOLDER, _move

    if not item.image.is_file():
        raise NotFound(f"{item.image.name} is not in the inbox any more (decided elsewhere?)")
    if caption is not None:
        save_caption(item, caption)
    if decision == "redo" and params is not None:
        sidecar = item.sidecar()
        if not sidecar:
            raise NotFound(f"{item.sidecar_path.name} is missing or unreadable: a redo needs the sidecar")
        sidecar["params"] = params
        atomic_write_json(item.sidecar_path, sidecar)
    return _move(item.image, layout.root / FOLDER[decision])


def waiting_for(job: Job) -> str:
    minutes = int((time.time() - job.updated_at) // 60)
    if minutes < 1:
        return "just now"
    return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"


LOGIN_ENV = "ASTROWATCH_UI_LOGIN"  # set for the page: ask for the API token before showing anything


def login_required(config: Config, host: str) -> bool:
    """Beyond loopback the page asks for the API token (a login form): refuse to start without
    one (exit 78).  On loopback nothing changes."""
    from ..api.auth import is_loopback, load_token, require_token_off_loopback

    token = load_token(config)
    require_token_off_loopback(host, token, "astrowatch ui")
    required = not is_loopback(host)
    os.environ[LOGIN_ENV] = "1" if required else "0"
    return required


def main(args) -> int:  # noqa: ANN001
    import importlib.util

    from ..config import CONFIG_ENV, load_config
    from ..errors import NotFound
    from ..layout import Layout
    from ..ledger_readonly import open_for_reading

    if importlib.util.find_spec("streamlit") is None:
        raise NotFound("the review page needs Streamlit: install the 'ui' extra (pip install 'astrowatch[ui]')")
    config = load_config(args.config)  # a bad config fails here, with one line, not in the browser
    try:  # so does a reviewer who cannot read the ledger
        open_for_reading(Layout(config.data_dir)).close()
    except NotFound:
        pass  # the page says so until the daemon has run once
    os.environ[CONFIG_ENV] = str(config.source)
    login_required(config, args.host)
    argv = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", args.host,
            "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--global.developmentMode", "false",
            "--client.toolbarMode", "viewer"]
    print(f"astrowatch ui: review page on http://{args.host}:{args.port} (data folder {config.data_dir})",
          file=sys.stderr, flush=True)
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover — execv does not return
