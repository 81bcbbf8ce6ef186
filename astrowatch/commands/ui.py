"""``astrowatch ui [--host 127.0.0.1] [--port 8501]``: the review page (Streamlit, extra ``ui``).

The page only reads the ledger and moves files, exactly like a reviewer would: a button moves
the inbox image (sidecars first) into ``approved/``, ``rejected/`` or ``redo/`` with the helper
``astrowatch review`` uses, so the daemon stays the only place that acts — now, or at its next
start when it is stopped.  The helpers below are the page's logic (tested without a browser);
``astrowatch/ui/page.py`` only draws them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from astrowatch.ui.views import login_required

APP = Path(__file__).resolve().parents[1] / "ui" / "page.py"


def main(args: argparse.Namespace) -> int:
    import importlib.util

    from astrowatch.core.config import CONFIG_ENV
    from astrowatch.core.errors import NotFound
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading

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
    os.execv(sys.executable, argv)  # replaces this process: never returns
