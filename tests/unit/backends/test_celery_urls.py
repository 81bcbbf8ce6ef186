"""Passwords in ``celery.broker_url``/``result_backend`` as Celery users write them: accepted, put
into the URLs kombu and redis-py read, and redacted from every text the process prints."""

from __future__ import annotations

import os

import pytest
import yaml

from astrowatch.backends.remote.celery_app import redact, urls
from astrowatch.core.config import Config, load_config
from astrowatch.core.errors import ConfigError
from astrowatch.core.secrets import redact as redact_text
from astrowatch.core.secrets import url_credentials, without_credentials

PW = "Sw0rdf1sh-p@ss/9"  # an @ and a / must be percent-encoded in the URL
ENC = "Sw0rdf1sh-p%40ss%2F9"


def celery(**section: object) -> Config:
    return Config.model_validate({"executor": "celery", "celery": section})


@pytest.mark.parametrize(("url", "user"), [
    (f"redis://:{ENC}@127.0.0.1:6379/0", None),
    (f"redis://astro:{ENC}@127.0.0.1:6379/0", "astro"),
    (f"rediss://astro:{ENC}@redis.example:6380/1", "astro"),
    (f"redis://127.0.0.1:6379/0?password={ENC}", None),
    (f"rediss://redis.example:6380/0?ssl_cert_reqs=required&password={ENC}", None),
])
def test_a_password_in_the_url_is_accepted_given_to_celery_and_redacted(url, user):
    cfg = celery(broker_url=url)
    assert url_credentials(url) == (user, PW)
    broker, backend = urls(cfg)
    assert broker == backend and url_credentials(broker) == (user, PW)
    assert "password=" not in broker  # kombu takes it from user:password@ only (and masks it there)
    assert broker.startswith(url.split(":", 1)[0] + "://")
    if "ssl_cert_reqs=required" in url:
        assert "ssl_cert_reqs=required" in broker
    for shown in (redact(url), redact(broker), redact_text(url), redact_text(broker),
                  redact_text(f"Error connecting to {broker}: {PW}")):
        assert PW not in shown and ENC not in shown, shown
    assert "***" in redact(url) and ("127.0.0.1" in redact(url) or "redis.example" in redact(url))


def test_the_result_backend_keeps_its_own_password_and_the_broker_its_file(tmp_path):
    secret = tmp_path / "redis_password"
    secret.write_text("from-the-file-123\n")
    os.chmod(secret, 0o600)
    cfg = celery(broker_url="redis://127.0.0.1:6379/0", password_file=str(secret))
    broker, backend = urls(cfg)
    assert url_credentials(broker) == (None, "from-the-file-123") == url_credentials(backend)
    cfg = celery(broker_url="redis://127.0.0.1:6379/0", result_backend=f"redis://:{ENC}@127.0.0.1:6379/1")
    broker, backend = urls(cfg)
    assert broker == "redis://127.0.0.1:6379/0" and url_credentials(backend) == (None, PW)


def test_a_password_in_the_url_and_a_password_file_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"executor": "celery", "celery": {
        "broker_url": "redis://:an0ther-secret@127.0.0.1/0", "password_file": str(tmp_path / "pw")}}))
    with pytest.raises(ConfigError, match="keep one") as err:
        load_config(path)
    assert "an0ther-secret" not in str(err.value)


def test_an_unsupported_scheme_is_refused_without_showing_the_password(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"celery": {"broker_url": "amqp://guest:gu3st-secret@127.0.0.1//"}}))
    with pytest.raises(ConfigError, match="only redis") as err:
        load_config(path)
    assert "gu3st-secret" not in str(err.value)
    path.write_text(yaml.safe_dump({"celery": {"broker_url": "redis://:p0rt-secret@127.0.0.1:port/0"}}))
    with pytest.raises(ConfigError, match="not a valid URL") as err:
        load_config(path)
    assert "p0rt-secret" not in str(err.value)


def test_without_credentials_keeps_everything_else():
    assert without_credentials("rediss://u:p@h:1/2?ssl_cert_reqs=required&password=x") == \
        "rediss://h:1/2?ssl_cert_reqs=required"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

