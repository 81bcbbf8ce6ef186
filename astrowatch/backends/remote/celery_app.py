"""The Celery app both sides build from ``config.celery`` (imported only with ``executor: celery``).

JSON only (``task_serializer``/``result_serializer``/``accept_content``), acks late, prefetch 1,
``task_reject_on_worker_lost``, the same ``visibility_timeout`` for broker and result backend,
results kept until the coordinator has read them (``result_expires`` a day).  The password comes
from ``celery.password_file`` or ``$CREDENTIALS_DIRECTORY/redis_password`` (recommended), or from the
URL itself as Celery users write it (``redis://:pw@host``, ``redis://user:pw@host``, ``?password=pw``);
either way it is put into the URLs' ``user:password@`` here only (kombu cannot take ``?password=``,
and masks only that form in its own lines), and every form of it is redacted from every log line;
:func:`redact` is what logs and ``status`` show.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from astrowatch.backends.remote.protocol import TASK_NAME
from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from celery import Celery

    from astrowatch.core.config import CeleryConfig, Config

CREDENTIAL_NAME = "redis_password"


def password(cfg: CeleryConfig) -> str | None:
    path = cfg.password_file
    if path is None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
            path = Path(creds) / CREDENTIAL_NAME
    if path is None:
        return None
    from astrowatch.core.secrets import read_secret_file, remember

    secret = read_secret_file(path, "celery.password_file")
    remember(quote(secret, safe=""))  # as it appears in the URLs
    return secret


def with_auth(url: str, user: str | None, secret: str | None) -> str:
    if not user and not secret:
        return url
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user or '', safe='')}:{quote(secret or '', safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """``url`` with its password shown as ``***`` (in ``user:password@`` or ``?password=``)."""
    from astrowatch.core.secrets import redact_url

    return redact_url(url)


def _auth_url(url: str, user: str | None, secret: Callable[[], str | None]) -> str:
    """``url`` with the credentials in ``user:password@``: its own, else the config's."""
    from astrowatch.core.secrets import url_credentials, without_credentials

    own_user, own_password = url_credentials(url)
    return with_auth(without_credentials(url), own_user or user,
                     own_password if own_password is not None else secret())


def urls(config: Config) -> tuple[str, str]:
    """(broker, result backend) with the credentials in them.  Never log these."""
    cfg = config.celery
    read: list[str | None] = []

    def secret() -> str | None:  # read once, and only for a URL without its own password
        if not read:
            read.append(password(cfg))
        return read[0]

    return (_auth_url(cfg.broker_url, cfg.username, secret),
            _auth_url(cfg.result_backend or cfg.broker_url, cfg.username, secret))


def settings(config: Config, *, worker: bool = False) -> dict[str, Any]:
    """Both sides' settings.  Workers retry storing a result until Redis is back (the image is
    done); the coordinator must see the outage at once, so its jobs go ``waiting``."""
    cfg = config.celery
    vt = int(max(cfg.visibility_timeout, 1))
    transport = {"visibility_timeout": vt, "socket_connect_timeout": 3, "socket_timeout": 10,
                 "unacked_restore_interval": max(1, min(10, vt // 4)), "unacked_restore_throttle": 1}
    return {
        "task_serializer": "json", "result_serializer": "json", "accept_content": ["json"],
        "result_accept_content": ["json"], "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1, "task_track_started": True, "task_default_queue": cfg.queue,
        "task_routes": {TASK_NAME: {"queue": cfg.queue}}, "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": vt}, "visibility_timeout": vt,
        "result_expires": 86400, "result_backend_always_retry": worker, "result_backend_max_retries": 1000,
        "result_backend_max_sleep_between_retries_ms": 2000, "redis_socket_connect_timeout": 3,
        "redis_socket_timeout": 10, "redis_retry_on_timeout": True, "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None, "worker_send_task_events": False, "task_send_sent_event": False,
        "worker_hijack_root_logger": False, "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False, "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        "broker_use_ssl": _ssl(cfg.broker_url), "redis_backend_use_ssl": _ssl(cfg.result_backend or cfg.broker_url),
    }


def _ssl(url: str) -> dict[str, Any] | None:
    if not url.startswith("rediss://"):
        return None
    import ssl

    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def make_app(config: Config, name: str = "astrowatch", *, worker: bool = False) -> Celery:
    try:
        from celery import Celery
    except ImportError:
        raise ConfigError("executor: celery needs Celery and redis-py",
                          hint="pip install 'astrowatch[celery]'") from None
    broker, backend = urls(config)
    app = Celery(name, broker=broker, backend=backend, set_as_current=False)
    app.conf.update({k: v for k, v in settings(config, worker=worker).items() if v is not None})
    return app


def redis_client(config: Config) -> Any:
    """A redis-py client on the broker (markers, delivery counters, health)."""
    import redis

    broker, _ = urls(config)
    kwargs: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 10}
    if broker.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
    return redis.Redis.from_url(broker, **kwargs)
