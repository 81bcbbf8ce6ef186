"""``astrowatch worker``: a Celery worker bound to one device, running one job at a time.

The backends named by the worker's config (``astro.backend``, ``enhance.backend``) and its
``caption:`` models are loaded *before* the Celery consumer starts: a worker whose backend cannot
load, or whose caption model folder lacks a file, exits non-zero (78 for the folder, naming it)
with the reason and never takes a job.  An enhance task is captioned here, after the image is made,
with this worker's ``caption:`` section and the job's caption overrides; the record travels back
in the result (a ``caption`` task, sent on a cache hit, runs that step alone).
Pool ``threads`` with concurrency 1 (no fork, so no CUDA after
fork; the main thread stays free to answer ``inspect`` and to restore messages of dead
workers), prefetch 1, acks late.  Only :data:`protocol.TASK_NAME` is registered.  The worker
never touches the data folder unless ``celery.shared_data_dir`` gives it paths in it.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import structlog

from astrowatch import __version__
from astrowatch.backends.base import AstroTask, Backend, CancelToken, EnhanceTask, Result
from astrowatch.backends.caption.folders import check_caption_models
from astrowatch.backends.caption.service import CAPTION_KIND
from astrowatch.backends.pool import BackendPool
from astrowatch.backends.registry import resolve_auto
from astrowatch.backends.remote import protocol as proto
from astrowatch.core.errors import AstrowatchError, PermanentBackendError
from astrowatch.core.jobs import BackendName, JobKind

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.caption.text import CaptionSettings
    from astrowatch.core.config import Config

log = structlog.get_logger("astrowatch.remote.worker")


class RemoteStats(TypedDict):
    jobs: int
    seconds: float
    last_seconds: float | None


class WorkerRuntime:
    """The backends of one worker process and what it is doing (for ``status``)."""

    def __init__(self, config: Config, device: str | None, name: str) -> None:
        self.config = config.model_copy(update={"executor": "local"})
        self.device, self.name = device, name
        self.pool = BackendPool(self.config, device)
        self.defaults: dict[str, str] = {}
        self.cancel = CancelToken()
        self.current: str | None = None
        self.lock = threading.Lock()
        self.stats: RemoteStats = {"jobs": 0, "seconds": 0.0, "last_seconds": None}
        self.tmp = Path(tempfile.mkdtemp(prefix="astrowatch-worker-"))
        self._redis: Any = None

    def load(self) -> None:
        """Start the configured backends now; raises (the worker exits) if one cannot load."""
        check_caption_models(self.config)  # before any model loads: a missing file is named at once
        for kind in JobKind:
            name = getattr(self.config, kind).backend
            if name == BackendName.AUTO:
                name, why = resolve_auto(kind, self.config)
                log.info("backend chosen", kind=kind.value, backend=name, why=why)
            self.defaults[kind.value] = name  # plain strings: logged and reported as they are
            self.pool.get(kind, name)
        self.pool.get(CAPTION_KIND, CAPTION_KIND)  # the caption models, loaded once, kept across jobs
        log.info("backends loaded", backends=self.defaults, load_seconds=self.pool.load_seconds, device=self.device)

    def info(self) -> dict[str, Any]:
        st: dict[str, Any] = dict(self.stats)
        st["s_per_image"] = round(st["seconds"] / st["jobs"], 3) if st["jobs"] else None
        backends = self.pool.describe()
        return {"name": self.name, "device": self.device, "pid": os.getpid(), "astrowatch": __version__,
                "schema": proto.SCHEMA, "backends": self.defaults, "models": {
                    n: b.get("model") for n, b in backends.items()}, "current_job": self.current, "stats": st}

    # -- one task -----------------------------------------------------------------------------------
    def handle(self, payload: Any, task_id: str) -> dict[str, Any]:
        """Run one task; every outcome is returned as data (JSON), never raised (but for a copy of a
        job already done, dropped with Celery's ``Ignore``)."""
        reason = proto.check_schema(payload, self.name)
        if reason:
            log.warning("task refused", job_id=task_id, reason=reason)
            return proto.result_error(PermanentBackendError(reason), worker=self.name, device=self.device,
                                      status="rejected")
        if self._already_done(task_id):
            from celery.exceptions import Ignore

            log.info("redelivered copy of a job already done; skipped", job_id=task_id)
            raise Ignore()  # acked, and no result stored over anything
        structlog.contextvars.bind_contextvars(job_id=task_id, user=payload.get("user"))
        log.info("task started", kind=payload.get("kind"), backend=payload.get("backend"))
        t0 = time.monotonic()
        with self.lock:
            self.current = task_id
        try:
            too_many = self._count_delivery(task_id)
            if too_many:
                raise PermanentBackendError(too_many)
            result, captions = self.run(payload)
            seconds = time.monotonic() - t0
            self.stats["jobs"] += 1
            self.stats["seconds"] = round(self.stats["seconds"] + seconds, 3)
            self.stats["last_seconds"] = round(seconds, 3)
            log.info("task done", seconds=round(seconds, 3), backend=result.backend if result else None)
            self._clear_deliveries(task_id)
            return proto.result_ok(result, worker=self.name, device=self.device, seconds=seconds, job_id=task_id,
                                   put_png=self._put_png, captions=captions)
        except Exception as exc:
            if not isinstance(exc, AstrowatchError):
                log.exception("unexpected error in task")
            else:
                log.warning("task failed", error=str(exc))
            self._clear_deliveries(task_id)
            return proto.result_error(exc, worker=self.name, device=self.device)
        finally:
            with self.lock:
                self.current = None
            structlog.contextvars.unbind_contextvars("job_id", "user")

    def run(self, payload: dict[str, Any]) -> tuple[Result | None, dict[str, Any] | None]:
        """(the image, the caption record): no image for a ``caption`` task, no record for an astro
        task or for a schema-1 coordinator (it captions itself)."""
        data_dir = self.config.data_dir if self.config.celery.shared_data_dir else None
        caption_only = payload["kind"] == "caption"
        backend = self.pool.get(JobKind.ENHANCE if caption_only else payload["kind"], payload["backend"])
        # the job's deadline runs here, where the backend runs (limits.job_timeout_seconds, kept
        # below celery.visibility_timeout so a task is never redelivered while it still runs)
        cancel = self.cancel.for_job(self.config.limits.job_timeout_seconds)
        if payload["kind"] == JobKind.ASTRO:
            init = None
            if payload.get("init_image"):
                blob = payload["init_image"]
                init = self.tmp / f"{payload['job_id']}-{Path(blob['name']).name}"
                init.write_bytes(proto.blob_bytes(blob, data_dir))
            try:
                return backend.generate(AstroTask(
                    job_id=payload["job_id"], user=payload["user"], chart=proto.chart_from_dict(payload["chart"]),
                    params=payload["params"], seed=payload["seed"], prompt=payload["prompt"],
                    negative_prompt=payload["negative_prompt"], fusion=payload.get("fusion") or {},
                    init_image=init, cancel=cancel)), None
            finally:
                if init is not None:
                    init.unlink(missing_ok=True)
        image = self._enhance_input(payload, data_dir)
        section = payload.get("caption")
        settings = self._caption_settings(payload["backend"], section)
        params = dict(payload["params"])
        if payload["backend"] == "sdapi" and settings is not None and settings.captioner != "sdapi":
            params["caption_model"] = "none"  # this worker's captioner writes line 1: no WebUI interrogate
        task = EnhanceTask(job_id=payload["job_id"], user=payload["user"], image=image,
                           source_name=payload["source_name"], params=params, seed=payload["seed"],
                           facts=payload.get("facts") or {}, cancel=cancel)
        result = None if caption_only else backend.enhance(task)
        if settings is None or section is None:
            return result, None
        return result, self.caption(task, result, settings, str(section.get("trigger") or ""))

    def _caption_settings(self, backend: str, section: Any) -> CaptionSettings | None:
        if not isinstance(section, dict):
            return None
        from astrowatch.backends.caption.text import effective_settings

        return effective_settings(self.config, backend, dict(section.get("params") or {}))

    def caption(self, task: EnhanceTask, result: Result | None, settings: CaptionSettings,
                trigger: str) -> dict[str, Any]:
        """The caption step, with this worker's models, on the preprocessed input (as the local path)."""
        from astrowatch.pipeline.captions import model_captions, sdapi_caption, service

        ctx = _CaptionContext(self.config, self.pool.get, task.cancel)
        t0 = time.monotonic()
        record = model_captions(self.config, settings, task.image, lambda: service(ctx),
                                lambda model: sdapi_caption(ctx, result, task, model), task.cancel, trigger=trigger)
        record["worker"] = {"name": self.name, "device": self.device}
        log.info("captioned", captioner=settings.captioner, tagger=settings.tagger,
                 seconds=round(time.monotonic() - t0, 3))
        return record

    def _enhance_input(self, payload: dict[str, Any], data_dir: Path | None) -> Any:
        from PIL import Image

        data = proto.blob_bytes(payload["image"], data_dir)
        if not payload.get("preprocess"):
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert("RGB")
        from astrowatch.core.config import EnhanceConfig, LimitsConfig
        from astrowatch.pipeline.preprocess import preprocess

        prep = payload["preprocess"]
        path = self.tmp / f"{payload['job_id']}-{Path(payload['image']['name']).name}"
        path.write_bytes(data)
        try:
            image, _facts = preprocess(path, enhance=EnhanceConfig(**prep["enhance"]),
                                       limits=LimitsConfig(**prep["limits"]))
        finally:
            path.unlink(missing_ok=True)
        return image

    # -- a task that kills its worker must not loop forever ------------------------------------------
    def _redis_client(self) -> Any:
        if self._redis is None:
            from astrowatch.backends.remote.celery_app import redis_client

            self._redis = redis_client(self.config)
        return self._redis

    def _count_delivery(self, task_id: str) -> str | None:
        key = proto.DELIVERIES_KEY.format(task_id)
        client = self._redis_client()
        n = int(client.incr(key))
        client.expire(key, 7 * 86400)
        limit = self.config.retries.max_attempts + 1
        if n > limit:
            return f"the task was delivered {n} times without finishing (it kills its worker?); giving up"
        return None

    def _already_done(self, task_id: str) -> bool:
        try:
            return bool(self._redis_client().exists(proto.DONE_KEY.format(task_id)))
        except Exception:
            return False

    def _put_png(self, key: str, data: bytes) -> bool:
        """The result image as raw bytes in its own key; False (inline instead) if Redis is away."""
        try:
            return bool(self._redis_client().set(key, data, ex=86400))
        except Exception:
            log.warning("broker unreachable for the image; sending it inline", key=key)
            return False

    def mark_done(self, task_id: str) -> None:
        try:
            self._redis_client().set(proto.DONE_KEY.format(task_id), "1", ex=86400)
        except Exception:
            log.warning("could not mark the job done in the broker", job_id=task_id)

    def _clear_deliveries(self, task_id: str) -> None:
        try:
            self._redis_client().delete(proto.DELIVERIES_KEY.format(task_id))
        except Exception:
            pass


@dataclass(frozen=True)
class _CaptionContext:
    """What the caption step needs of a job's context, on a worker."""

    config: Config
    get_backend: Callable[[str, str], Backend]
    cancel: CancelToken


def default_name(device: str | None) -> str:
    return f"{(device or 'cpu').replace(':', '')}@{socket.gethostname()}"


def serve(config: Config, *, device: str | None, name: str | None) -> int:
    """Load the backends, then consume tasks until SIGTERM (which lets the current image finish)."""
    from astrowatch.backends.remote.celery_app import make_app, redact

    runtime = WorkerRuntime(config, device, name or default_name(device))
    try:
        runtime.load()
    except AstrowatchError as exc:
        print(f"astrowatch worker {runtime.name}: backend cannot load, taking no jobs: {exc}", file=sys.stderr)
        log.error("backend cannot load; exiting without taking jobs", error=str(exc))
        return exc.exit_code or 1
    app = make_app(config, "astrowatch-worker", worker=True)
    _register(app, runtime)
    import logging

    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)  # it would log whole results
    log.info("worker starting", name=runtime.name, device=device, queue=config.celery.queue,
             broker=redact(config.celery.broker_url))
    worker = app.Worker(hostname=runtime.name, pool_cls="threads", concurrency=1, queues=[config.celery.queue],
                        without_gossip=True, without_mingle=True, without_heartbeat=True,
                        loglevel=config.log.level.upper(), quiet=True)
    try:
        worker.start()
    finally:
        runtime.pool.close()
        shutil.rmtree(runtime.tmp, ignore_errors=True)
    return worker.exitcode or 0


def _register(app: Any, runtime: WorkerRuntime) -> None:
    from celery.signals import task_success, worker_ready
    from celery.worker.control import inspect_command

    @app.task(name=proto.TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def model_work(self: Any, payload: Any) -> dict[str, Any]:
        return runtime.handle(payload, self.request.id)

    @inspect_command()
    def astrowatch_info(state: Any) -> dict[str, Any]:
        return runtime.info()

    @task_success.connect(sender=model_work, weak=False)
    def _done(sender: Any = None, result: Any = None, **_: Any) -> None:
        # After Celery stored the result, before the ack: a copy redelivered from here on is skipped.
        if isinstance(result, dict) and result.get("status") == "ok":
            runtime.mark_done(sender.request.id)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        log.info("ready to take jobs", name=runtime.name, backends=runtime.defaults)

    app.finalize(auto=True)
    for task_name in [n for n in app.tasks if n != proto.TASK_NAME]:
        del app.tasks[task_name]  # a worker runs astrowatch's own task and nothing else
    del model_work, astrowatch_info, _ready, _done
