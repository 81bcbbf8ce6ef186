"""``astrowatch init [DIR]``: the data folders and a commented config.yaml (never overwritten)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def main(args) -> int:  # noqa: ANN001
    from ..config import load_config
    from ..layout import Layout

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "config.yaml"
    if config_path.exists():
        print(f"kept existing {config_path}")
    else:
        template = resources.files("astrowatch").joinpath("config.example.yaml").read_text(encoding="utf-8")
        config_path.write_text(template, encoding="utf-8")
        print(f"wrote {config_path}")
    config = load_config(config_path)
    Layout(config.data_dir).ensure()
    print(f"data folders ready under {config.data_dir}")
    print(f"next: astrowatch run --config {config_path}")
    return 0
