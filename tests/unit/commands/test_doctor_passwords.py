"""``astrowatch doctor`` on a config holding the Redis password in a URL: a warning when anyone but
the service user can read the config, and never the password itself."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from astrowatch.core.config import Config, load_config


def test_doctor_warns_when_the_config_holding_a_password_is_readable_by_others(tmp_path: Path):
    from astrowatch.commands.doctor import OK, WARN, _url_passwords

    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(data), "executor": "celery",
                                    "celery": {"broker_url": "redis://:d0ctor-secret@127.0.0.1/0"}}))
    cfg = load_config(path)
    for mode, expected in ((0o640, WARN), (0o644, WARN), (0o600, OK)):
        os.chmod(path, mode)
        status, detail = _url_passwords(cfg)
        assert status == expected, (oct(mode), detail)
        assert "d0ctor-secret" not in detail
        assert "password_file" in detail
    os.chmod(path, 0o640)
    status, detail = _url_passwords(cfg)
    assert "readable by group" in detail and "chmod 600" in detail
    cfg = Config.model_validate({"celery": {"broker_url": "redis://127.0.0.1/0"}})
    assert _url_passwords(cfg)[0] == OK
