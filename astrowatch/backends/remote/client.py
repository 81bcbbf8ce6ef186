"""The coordinator's side of ``executor: celery``: a backend whose ``generate``/``enhance`` run
on a remote ``astrowatch worker``.

The worker thread that claimed the job calls it exactly as it calls a local backend, so errors,
retries, waiting and publishing are the local code path.  One job = one task whose id is the
ledger id.  Dispatch is idempotent: once the message is in the broker a marker
(``astrowatch:sent:<job>``, in the same Redis, so both live or die together) says so, and a
re-claimed job — after a coordinator restart or a broker outage — re-attaches to the task in
flight instead of sending it again.  The result is read by polling the result backend, checked
(sha256), then forgotten.  Nothing here touches the data folder except, with
``shared_data_dir``, the job's own work folder.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from astrowatch.backends.base import AstroTask, Backend, CancelToken, EnhanceTask, Result
from astrowatch.backends.registry import REGISTRY
from astrowatch.backends.remote import protocol as proto
from astrowatch.core.errors import BackendError, BackendUnavailable, ConfigError, InputError
from astrowatch.storage.layout import Layout

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

log = structlog.get_logger("astrowatch.remote")
T = TypeVar("T")
_APPS: dict[Any, Any] = {}
LOST_CHECK_SECONDS = 5.0  # how often a job in flight checks that the broker still has its task
_APPS_LOCK = threading.Lock()


def shared_app(config: Config) -> Any:
    """One Celery app per broker settings, shared by the coordinator's dispatcher threads."""
    from astrowatch.backends.remote.celery_app import make_app, urls

    key = (urls(config), config.celery.model_dump_json())
    with _APPS_LOCK:
        if key not in _APPS:
            _APPS[key] = make_app(config, "astrowatch-coordinator")
        return _APPS[key]


def redact_text(text: str) -> str:
    """A broker error's text without the password (kombu and redis-py may print the URL)."""
    from astrowatch.core.secrets import redact

    return redact(text)


def broker_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions

    return (OSError, redis.exceptions.RedisError, kombu.exceptions.OperationalError)


class RemoteBackend(Backend):
    """Proxy for backend ``name`` running on the Celery workers."""

    kinds = frozenset({"astro", "enhance"})

    def __init__(self, name: str, kind: str, config: Config) -> None:
        super().__init__(config)
        if name not in REGISTRY:
            raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(REGISTRY))}")
        self.name = name  # type: ignore[misc]  # its module is not imported here (sdxl would pull torch)
        self._local = threading.local()

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def app(self) -> Any:
        return shared_app(self.config)

    @property
    def redis(self) -> Any:
        client = getattr(self._local, "redis", None)
        if client is None:
            from astrowatch.backends.remote.celery_app import redis_client

            client = self._local.redis = redis_client(self.config)
        return client

    def settings_key(self) -> Any:
        section = getattr(self.config, self.name, None)
        return {"remote": self.config.celery.queue,
                "backend": section.model_dump(mode="json") if section is not None else None}

    def describe(self) -> dict[str, Any]:
        from astrowatch.backends.remote.celery_app import redact

        return {"name": self.name, "executor": "celery", "broker": redact(self.config.celery.broker_url),
                "queue": self.config.celery.queue}

    def start(self) -> None:
        self.health()

    def health(self) -> None:
        try:
            self.redis.ping()
        except broker_errors() as exc:
            raise BackendUnavailable(f"broker unreachable: {type(exc).__name__}") from None

    # -- work -------------------------------------------------------------------------------------
    def generate(self, task: AstroTask) -> Result:
        init = None
        if task.init_image is not None:
            init = self._blob(Path(task.init_image), task.job_id)
        return self._run(proto.astro_payload(task, self.name, init=init), task.job_id, task.cancel, self._decode)

    def enhance(self, task: EnhanceTask) -> Result:
        """The dropped file's own bytes travel (a JPEG is ~5x smaller than the pixels as PNG, and
        nothing is encoded here); the worker preprocesses it again with this config's settings,
        enhances it, then captions it with its own ``caption:`` models (``Result.captions``)."""
        return self._run(self._enhance_payload(task, "enhance"), task.job_id, task.cancel, self._decode)

    def captions(self, task: EnhanceTask) -> dict[str, Any]:
        """The caption step alone, on a worker (a cache hit here: the models are there, not here)."""
        return self._run(self._enhance_payload(task, "caption"), task.job_id, task.cancel, proto.decode_captions)

    def _enhance_payload(self, task: EnhanceTask, kind: str) -> dict[str, Any]:
        source = self._source_bytes(task.source) if task.source is not None else None
        if task.source is not None and source is not None:
            blob = self._blob_bytes(source, task.source_name, task.job_id, f"input{task.source.suffix.lower()}")
            prep = {"enhance": self.config.enhance.model_dump(mode="json"),
                    "limits": self.config.limits.model_dump(mode="json")}
        else:
            data = proto.png_bytes(task.image, compress_level=1)
            blob, prep = self._blob_bytes(data, task.source_name, task.job_id, "input.png"), None
        return proto.enhance_payload(task, self.name, image=blob, preprocess=prep, kind=kind,
                                     trigger=self.config.dataset.trigger_word.strip())

    def _source_bytes(self, path: Path) -> bytes | None:
        """The dropped file's bytes, read as every shared-tree file is (no link followed, a plain
        single-link file within ``limits.max_image_bytes``); None if it is gone."""
        from astrowatch.storage.safefs import Unreadable, read_bytes

        try:
            return read_bytes(path, root=Layout(self.config.data_dir).root,
                              max_bytes=self.config.limits.max_image_bytes, what="photo").data
        except Unreadable as exc:
            if exc.gone:
                return None
            raise

    def _blob(self, path: Path, job_id: str) -> dict[str, Any]:
        return self._blob_bytes(path.read_bytes(), path.name, job_id, f"init{path.suffix}")

    def _blob_bytes(self, data: bytes, name: str, job_id: str, file_name: str) -> dict[str, Any]:
        cfg = self.config.celery
        if cfg.shared_data_dir:  # not in state/work: recovery wipes that, and a task may still be queued
            layout = Layout(self.config.data_dir)
            path = self._shared_dir(job_id) / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return proto._blob(data, name, layout.rel(path))
        if len(data) > cfg.inline_max_mb * proto.MB:
            raise InputError(
                f"{name}: {len(data) / proto.MB:.1f} MB to send to a GPU worker is over celery.inline_max_mb "
                f"({cfg.inline_max_mb:g} MB)",
                hint="raise celery.inline_max_mb, or mount the data folder on every worker and set "
                     "celery.shared_data_dir: true")
        return proto._blob(data, name, None)

    def _shared_dir(self, job_id: str) -> Path:
        return Layout(self.config.data_dir).remote_dir(job_id)

    def _decode(self, data: Any) -> Result:
        return proto.decode_result(data, self.name, get_png=self.redis.get)

    def _run(self, payload: dict[str, Any], job_id: str, cancel: CancelToken, decode: Callable[[Any], T]) -> T:
        errors = broker_errors()
        app = self.app  # looked up once per job (its key reads the broker URLs and password file)
        try:
            sent = self._dispatch(payload, job_id, app)
            data = self._wait(job_id, cancel, payload, app, sent=sent)
        except errors as exc:
            raise BackendUnavailable(f"broker unreachable: {type(exc).__name__}: {redact_text(str(exc))}") from None
        try:
            return decode(data)
        except errors as exc:
            raise BackendUnavailable(f"broker unreachable: {type(exc).__name__}: {redact_text(str(exc))}") from None
        finally:
            self._forget(job_id, app, data)

    def _dispatch(self, payload: dict[str, Any], job_id: str, app: Any) -> bool:
        """Send the task unless it is in flight already; True when it was sent now."""
        marker = proto.SENT_KEY.format(job_id)
        if self.redis.exists(marker):
            log.info("re-attached to the task in flight (not sent again)", job_id=job_id)
            return False
        app.backend.forget(job_id)  # a stale result of an earlier attempt must not be read
        self.redis.delete(proto.DONE_KEY.format(job_id))
        app.send_task(proto.TASK_NAME, args=[payload], task_id=job_id, queue=self.config.celery.queue)
        self.redis.set(marker, str(time.time()), ex=7 * 86400)
        log.info("dispatched", job_id=job_id, queue=self.config.celery.queue, backend=self.name)
        return True

    def _wait(self, job_id: str, cancel: CancelToken, payload: dict[str, Any], app: Any, *, sent: bool = False) -> Any:
        """Poll for the result.  ``sent``: the task was sent just now, so the first poll waits one
        interval (an immediate one would find it pending); a re-attached task is polled at once."""
        backend = app.backend
        interval = self.config.celery.poll_interval
        checked = time.monotonic()
        if sent:
            cancel.sleep(interval)
        while True:
            meta = backend.get_task_meta(job_id)
            state = meta.get("status")
            if state == "SUCCESS":
                return meta.get("result")
            if state in ("FAILURE", "REVOKED"):
                self._forget(job_id, app)
                from astrowatch.core.secrets import redact

                raise BackendError(f"the remote task failed: {redact(str(meta.get('result')))}")
            if cancel.interrupted:  # the marker stays: the next start re-attaches to the task
                cancel.check()
            if time.monotonic() - checked > LOST_CHECK_SECONDS:
                checked = time.monotonic()
                if state == "PENDING" and not self.redis.exists(proto.SENT_KEY.format(job_id)):
                    log.warning("the broker lost the task (Redis restarted without AOF?); sending it again",
                                job_id=job_id)
                    self._dispatch(payload, job_id, app)
            _maybe_restore(self.config)
            cancel.sleep(interval)

    def _forget(self, job_id: str, app: Any, data: Any = None) -> None:
        """The result is in hand: a redelivered copy still queued is skipped by the worker that gets it."""
        try:
            pipe = self.redis.pipeline(transaction=False)  # one round trip, the commands in this order
            pipe.set(proto.DONE_KEY.format(job_id), "1", ex=86400)
            pipe.delete(proto.SENT_KEY.format(job_id))
            if isinstance(data, dict) and data.get("png_key"):
                pipe.delete(data["png_key"])
            pipe.execute()
            app.backend.forget(job_id)
            if self.config.celery.shared_data_dir:
                shutil.rmtree(self._shared_dir(job_id), ignore_errors=True)
        except broker_errors() as exc:  # the result expires anyway (result_expires)
            log.warning("could not clear a finished task from the broker", job_id=job_id, error=type(exc).__name__)


_RESTORE = {"last": 0.0}


def _maybe_restore(config: Config) -> None:
    every = max(1.0, min(10.0, config.celery.visibility_timeout / 4))
    with _APPS_LOCK:
        if time.monotonic() - _RESTORE["last"] < every:
            return
        _RESTORE["last"] = time.monotonic()
    restore_unacked(config)


def restore_unacked(config: Config) -> None:
    """Give messages of dead workers back to the queue once ``visibility_timeout`` has passed (the
    workers also do this, but not while each is busy with a long image)."""
    app = shared_app(config)
    with app.connection_for_write() as conn:
        conn.default_channel.qos.restore_visible(num=1000, interval=1)


def remote_workers(config: Config, timeout: float = 1.0) -> list[dict[str, Any]] | str:
    """What each live ``astrowatch worker`` says about itself (Celery's inspect), or why not."""
    try:
        replies = shared_app(config).control.broadcast("astrowatch_info", reply=True, timeout=timeout) or []
    except broker_errors() as exc:
        return f"broker unreachable: {type(exc).__name__}"
    found = {host: reply for r in replies for host, reply in r.items() if isinstance(reply, dict)}
    return [found[host] for host in sorted(found)]
