"""The API token and the loopback rule (``astrowatch/api/auth.py``), for ``astrowatch api`` and
``astrowatch ui``: where the token comes from, the constant-time check, and the refusal to
listen beyond loopback without one (exit 78, one line, before FastAPI or Streamlit is imported)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import write_config

from astrowatch.api.auth import TOKEN_ENV, bearer, is_loopback, load_token, require_token_off_loopback, token_matches
from astrowatch.core.errors import ConfigError
from astrowatch.runtime.settings import load_config

GOOD = "s3cret-token-0123456789"


@pytest.fixture
def config(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "token").write_text(f"{GOOD}-file\n")
    return write_config(tmp_path, api={"token_file": "token"})


def test_the_token_comes_from_the_env_then_the_credential_then_the_file(config, tmp_path, monkeypatch) -> None:
    assert load_token(load_config(config)) == f"{GOOD}-file"  # relative to the config file, stripped
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_token").write_text(f"{GOOD}-cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_token(load_config(config)) == f"{GOOD}-cred"
    monkeypatch.setenv(TOKEN_ENV, f"{GOOD}-env")
    assert load_token(load_config(config)) == f"{GOOD}-env"


def test_no_token_anywhere_is_none(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # a credentials folder without api_token
    assert load_token(load_config(write_config(tmp_path))) is None


@pytest.mark.parametrize("content", ["short", "has a space in it somewhere", ""])
def test_weak_or_unreadable_tokens_are_config_errors(config, tmp_path, content) -> None:
    (tmp_path / "token").write_text(content)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_token(load_config(config))
    (tmp_path / "token").unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        load_token(load_config(config))


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.org", False), ("localhost.evil", False),
])
def test_loopback(host, loopback) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        require_token_off_loopback(host, None, "astrowatch api")
    else:
        with pytest.raises(ConfigError, match=TOKEN_ENV):
            require_token_off_loopback(host, None, "astrowatch api")
    require_token_off_loopback(host, GOOD, "astrowatch api")  # with a token: anywhere


def test_bearer_header_and_comparison() -> None:
    assert bearer(f"Bearer {GOOD}") == GOOD and bearer(f"bearer  {GOOD} ") == GOOD
    assert bearer(f"Basic {GOOD}") is None and bearer(GOOD) is None
    assert bearer(None) is None and bearer("Bearer ") is None
    assert token_matches(GOOD, GOOD)
    assert not token_matches(GOOD + "x", GOOD) and not token_matches(None, GOOD) and not token_matches("", GOOD)
    assert not token_matches("é" * 20, GOOD)  # non-ASCII input is compared too, never an exception


@pytest.mark.parametrize("command", ["api", "ui"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_refuses_a_non_loopback_host_without_a_token(tmp_path, monkeypatch, command, host) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = write_config(tmp_path)
    code = ("import sys; from astrowatch.cli import main; rc = main(sys.argv[1:]); "
            "print('imported', sorted(m for m in ('fastapi', 'uvicorn', 'streamlit') if m in sys.modules)); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, command, "-c", str(config), "--host", host],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"refusing to listen on {host} without an API token" in err[0] and TOKEN_ENV in err[0]
    assert proc.stdout.strip() == "imported []"


def test_the_review_page_asks_for_the_token_beyond_loopback(tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the 'ui' extra (Streamlit) is not installed")
    from streamlit.testing.v1 import AppTest

    from astrowatch.storage.ledger import Ledger
    from astrowatch.ui.views import LOGIN_ENV, login_required

    config_path = write_config(tmp_path)
    Ledger(tmp_path / "data" / "state" / "ledger.sqlite3").close()  # as if the daemon had run once
    monkeypatch.setenv(LOGIN_ENV, "0")  # so that monkeypatch restores (unsets) what login_required sets
    monkeypatch.setenv("ASTROWATCH_CONFIG", str(config_path))
    monkeypatch.setenv(TOKEN_ENV, GOOD)
    assert login_required(load_config(config_path), "0.0.0.0") is True
    app = Path(__file__).resolve().parents[2] / "astrowatch" / "ui" / "page.py"
    at = AppTest.from_file(str(app), default_timeout=30).run()
    assert not at.exception and [t.value for t in at.title] == ["astrowatch review"] and not at.info
    at.text_input(key="login-token").input("not-the-token-at-all").run()
    at.button(key="login").click().run()
    assert [e.value for e in at.error] == ["wrong token"] and not at.info
    at.text_input(key="login-token").input(GOOD).run()
    at.button(key="login").click().run()
    assert not at.exception and "The inbox is empty" in at.info[0].value  # the page itself
    assert login_required(load_config(config_path), "127.0.0.1") is False
    assert "The inbox is empty" in AppTest.from_file(str(app), default_timeout=30).run().info[0].value
