"""The config and secret files are the service's: the owner/mode check, secret reading, redaction."""

from __future__ import annotations

import os
import stat

import pytest

from astrowatch.core.errors import ConfigError
from astrowatch.core.secrets import check_private_file, private_problem, read_secret_file, redact, remember


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, 0, 10, 0, 0, 0))


@pytest.mark.parametrize(("mode", "uid", "ok"), [
    (0o640, 1000, True),   # the service user's own config, group-readable
    (0o600, 0, True),      # root's key file
    (0o640, 0, True),      # /etc/astrowatch/config.yaml root:astrowatch 0640 (the documented install)
    (0o644, 1000, True),   # readable by all is not a write hole
    (0o660, 1000, False),  # group-writable: a member rewrites openai.base_url
    (0o646, 0, False),     # world-writable
    (0o640, 1001, False),  # another user's file: they could change it
])
def test_private_problem_owner_and_mode(tmp_path, mode, uid, ok):
    problem = private_problem(tmp_path / "config.yaml", fake_stat(mode, uid), "the config", fix_mode=0o640, euid=1000)
    assert (problem is None) is ok
    if problem is not None:
        text = str(problem)
        assert str(tmp_path / "config.yaml") in text and "the config" in text
        assert ("chmod 640 " if uid in (0, 1000) else "chown ") in text


def test_check_private_file_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    path.chmod(0o664)
    with pytest.raises(ConfigError) as err:
        check_private_file(path, "the config", fix_mode=0o640)
    assert err.value.exit_code == 78
    assert f"{path}: the config is writable by its group (mode 0664)" in str(err.value)
    assert f"chmod 640 {path}" in str(err.value)
    path.chmod(0o640)
    check_private_file(path, "the config")
    check_private_file(tmp_path / "missing.yaml", "the config")  # left to the reader's own message


def test_read_secret_file_checks_the_descriptor_refuses_fifos_and_remembers_the_value(tmp_path):
    key = tmp_path / "key"
    key.write_text("sk-secret-value-123456\n")
    key.chmod(0o600)
    assert read_secret_file(key, "the key") == "sk-secret-value-123456"
    assert redact("sent sk-secret-value-123456 to x") == "sent [redacted] to x"
    key.chmod(0o622)
    with pytest.raises(ConfigError, match="writable by its group and others"):
        read_secret_file(key, "the key")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a small regular file"):
        read_secret_file(fifo, "the key")  # returns at once: O_NONBLOCK


def test_redact_longest_first_and_ignores_tiny_values():
    remember("abc", "password-one", "password-one-two")
    assert redact("x password-one-two y password-one z abc") == "x [redacted] y [redacted] z abc"
