"""The config as the programs load it: :mod:`astrowatch.core.config` validates the file, then the
cross-checks that need the layers above it run here (today: every style name must exist, built-in
or in ``astro.styles_file``), so a bad name fails at load with the key, not at the first job.

Every entry point (the daemon, the commands, the API, the page) loads its config through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from astrowatch.core import config as _config
from astrowatch.core.config import Config
from astrowatch.core.errors import ConfigError


def check_styles(cfg: Config, origin: str) -> None:
    """astro.style (and learned style candidates) must name a style, built-in or in styles_file."""
    from astrowatch.fusion.data import validate_styles

    chosen = [("astro.style", cfg.astro.style)]
    chosen += [("feedback.candidates.astro.style", v) for v in cfg.feedback.candidates.get("astro.style", [])]
    try:
        validate_styles(cfg.astro.styles_file, chosen)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, parse, validate and cross-check the config file (errors name the file and the key)."""
    return _config.load_config(path, check=check_styles)


CONFIG_MODE = 0o640  # the group reads the config (reviewers' commands), nobody but its owner writes it


def load_service_config(path: str | os.PathLike[str] | None = None) -> Config:
    """:func:`load_config` for the service's own processes (``run``, ``drain``, ``api``,
    ``worker``): the file must also be owned by the service user or root and writable by nobody
    else (:func:`astrowatch.core.secrets.check_private_file`), else a :class:`ConfigError` (exit
    78) names the file and the ``chmod``/``chown`` that fixes it.  Reviewers' commands read the
    config with :func:`load_config` alone: it is not theirs."""
    from astrowatch.backends.caption.folders import check_caption_models
    from astrowatch.core.secrets import check_private_file

    check_private_file(_config.find_config(path), "the config", fix_mode=CONFIG_MODE)
    cfg = load_config(path)
    check_caption_models(cfg)  # a missing model file is named at start-up, not by every photo's job
    return cfg


def config_from_mapping(data: Any, *, base_dir: Path, origin: str = "config") -> Config:
    """A config from a mapping (tests, tools), with the same checks as :func:`load_config`."""
    return _config.config_from_mapping(data, base_dir=base_dir, origin=origin, check=check_styles)


def apply_overrides(cfg: Config, pairs: list[str]) -> Config:
    """``--set section.key=value`` overrides, checked like the file."""
    return _config.apply_overrides(cfg, pairs, check=check_styles)
