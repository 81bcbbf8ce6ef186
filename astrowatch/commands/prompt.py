"""``astrowatch prompt THEME``: print the fused prompt for a natal chart JSON.

Works without any configuration: with no ``--config``, no ``$ASTROWATCH_CONFIG`` and no
``./config.yaml`` the defaults apply.  A config file that is named but missing is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

FUSION_BACKENDS = ("sdxl", "sdapi", "openai")


def load_optional_config(explicit: str | None) -> Config:
    """The named (or ``$ASTROWATCH_CONFIG``) config, else ``./config.yaml`` if present, else defaults."""
    from astrowatch.core.config import CONFIG_ENV, DEFAULT_CONFIG_NAME, Config
    from astrowatch.runtime.settings import load_config

    if explicit or os.environ.get(CONFIG_ENV) or Path(DEFAULT_CONFIG_NAME).is_file():
        return load_config(explicit)
    return Config()


def default_backend(config: Config) -> str:
    """``astro.backend`` when it is a prompt-taking backend, else ``sdxl``."""
    backend = config.astro.backend
    return backend if backend in FUSION_BACKENDS else "sdxl"


def render_plain(fusion_dict: dict[str, Any]) -> str:
    return (f"{fusion_dict['prompt']}\n"
            f"Negative prompt: {fusion_dict['negative_prompt']}\n\n"
            f"{fusion_dict['description']}\n")


def main(args: argparse.Namespace) -> int:
    from astrowatch.chart.parse import parse_chart_file
    from astrowatch.fusion import fuse

    config = load_optional_config(args.config)
    chart = parse_chart_file(Path(args.theme), max_bytes=config.limits.max_json_bytes,
                             max_depth=config.limits.max_json_depth)
    fusion = fuse(chart, config, style=args.style, backend=args.backend or default_backend(config))
    data = fusion.to_dict()
    if args.json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(render_plain(data))
    return 0
