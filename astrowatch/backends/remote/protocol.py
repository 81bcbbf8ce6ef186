"""What travels between the coordinator and ``astrowatch worker``: plain JSON, no pickle.

A task carries one job's model work (the backend call and, for an enhance job, the caption step
with the worker's own ``caption:`` models; fusion, the cache and publishing stay on the
coordinator).  A ``caption`` task (a cache hit on the coordinator) runs the caption step alone.
Inputs are base64 in the message up to
``celery.inline_max_mb``, or paths relative to the data folder with ``celery.shared_data_dir``.
Every task names astrowatch's version and :data:`SCHEMA`; a worker that does not speak that
schema answers ``rejected`` (the job waits) and never starts the work.  The result carries the
PNG and its sha256, checked by the coordinator before anything is published.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch import __version__
from astrowatch.core.errors import (
    AstrowatchError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    InputError,
    Interrupted,
    PermanentBackendError,
)

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import AstroTask, EnhanceTask, Result

SCHEMA = 2  # bump when the payload or result layout changes (2: the caption step runs on the worker)
SUPPORTED_SCHEMAS = frozenset({1, 2})  # a schema-1 coordinator sends no ``caption``: it captions itself
TASK_NAME = "astrowatch.model_work"
SENT_KEY = "astrowatch:sent:{}"  # set by the coordinator once the message is in the broker
DELIVERIES_KEY = "astrowatch:deliveries:{}"  # counted by workers (a task that kills its worker)
PNG_KEY = "astrowatch:png:{}:{}"  # a result image, raw bytes, by job id and sha256
DONE_KEY = "astrowatch:done:{}"  # a result is stored (worker) / read (coordinator): later copies are skipped
_ERRORS: dict[str, type[AstrowatchError]] = {c.__name__: c for c in (
    InputError, BackendError, PermanentBackendError, BackendUnavailable, ConfigError, Interrupted)}
MB = 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_bytes(image: Any, compress_level: int = 4) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _blob(data: bytes, name: str, shared_path: str | None) -> dict[str, Any]:
    if shared_path is not None:
        return {"name": name, "path": shared_path, "sha256": hashlib.sha256(data).hexdigest()}
    return {"name": name, "b64": b64(data), "sha256": hashlib.sha256(data).hexdigest()}


def chart_to_dict(chart: Any) -> dict[str, Any]:
    """What :func:`dataclasses.asdict` gives (the same keys, order and copies), written out: its
    generic recursion was ~0.25 ms of the coordinator's CPU per astro job."""
    fields = {f.name: getattr(chart, f.name) for f in dataclasses.fields(chart)}
    return {**fields, "points": {k: _plain(p) for k, p in chart.points.items()},
            "houses": [_plain(h) for h in chart.houses], "aspects": [_plain(a) for a in chart.aspects],
            "extra": copy.deepcopy(chart.extra)}


def _plain(item: Any) -> dict[str, Any]:
    """A point, house or aspect (frozen dataclasses of plain values) as a dict."""
    return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}


def chart_from_dict(data: dict[str, Any]) -> Any:
    from astrowatch.chart.model import Aspect, Chart, House, Point

    return Chart(**{**data, "points": {k: Point(**v) for k, v in data["points"].items()},
                    "houses": [House(**h) for h in data.get("houses", [])],
                    "aspects": [Aspect(**a) for a in data.get("aspects", [])]})


def astro_payload(task: AstroTask, backend: str, *, init: dict[str, Any] | None) -> dict[str, Any]:
    return {"schema": SCHEMA, "astrowatch": __version__, "kind": "astro", "backend": backend,
            "job_id": task.job_id, "user": task.user, "params": task.params, "seed": task.seed,
            "prompt": task.prompt, "negative_prompt": task.negative_prompt, "fusion": task.fusion,
            "chart": chart_to_dict(task.chart), "init_image": init}


def enhance_payload(task: EnhanceTask, backend: str, *, image: dict[str, Any],
                    preprocess: dict[str, Any] | None = None, trigger: str = "",
                    kind: str = "enhance") -> dict[str, Any]:
    """``image`` is the dropped file itself with ``preprocess`` (the coordinator's ``enhance`` and
    ``limits`` sections: the worker preprocesses it the same way), or the preprocessed pixels as PNG.
    ``caption``: the coordinator's trigger word and the job's caption overrides; the worker captions
    with its own ``caption:`` section.  ``kind`` ``caption``: the caption step alone (no backend call)."""
    return {"schema": SCHEMA, "astrowatch": __version__, "kind": kind, "backend": backend,
            "job_id": task.job_id, "user": task.user, "params": task.params, "seed": task.seed,
            "source_name": task.source_name, "facts": task.facts, "image": image, "preprocess": preprocess,
            "caption": {"trigger": trigger, "params": task.caption_params}}


def inline_size(payload: dict[str, Any]) -> int:
    """Bytes of inline input data in a payload (what ``inline_max_mb`` limits)."""
    return sum(len(b.get("b64", "")) * 3 // 4 for b in (payload.get("init_image"), payload.get("image")) if b)


def check_schema(payload: Any, worker: str) -> str | None:
    """None if this worker can run the payload, else the reason it refuses (naming both versions)."""
    if not isinstance(payload, dict):
        return f"worker {worker} refused a task whose payload is not a JSON object"
    schema = payload.get("schema")
    if schema not in SUPPORTED_SCHEMAS:
        return (f"worker {worker} (astrowatch {__version__}, payload schema {SCHEMA}) cannot run a "
                f"schema {schema} task sent by astrowatch {payload.get('astrowatch')}: upgrade that worker "
                "(or the coordinator) so both speak the same schema")
    return None


def result_ok(result: Result | None, *, worker: str, device: str | None, seconds: float, job_id: str = "",
              put_png: Callable[[str, bytes], bool] | None = None,
              captions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The worker's answer.  The PNG goes as raw bytes into its own Redis key when ``put_png``
    manages it (no base64: -25 % memory, and the coordinator's 9 ms/MPx decode), else inline.
    ``captions``: the caption record (None when the coordinator asked for none); with no
    ``result`` (a ``caption`` task) the answer carries only the captions."""
    head = {"status": "ok", "schema": SCHEMA, "astrowatch": __version__, "worker": worker, "device": device,
            "seconds": round(seconds, 3)}
    if captions is not None:
        head["captions"] = captions
    if result is None:
        return head
    data = png_bytes(result.image)
    sha = hashlib.sha256(data).hexdigest()
    key = PNG_KEY.format(job_id, sha)
    image = {"png_key": key} if put_png is not None and put_png(key, data) else {"png_b64": b64(data)}
    return {**head, **image, "sha256": sha,
            "backend": result.backend, "model": result.model, "params": result.params, "seed": result.seed,
            "prompt": result.prompt, "negative_prompt": result.negative_prompt, "description": result.description,
            "infotext": result.infotext, "extra": result.extra}


def result_error(exc: BaseException, *, worker: str, device: str | None, status: str = "error") -> dict[str, Any]:
    name = type(exc).__name__
    if name not in _ERRORS:
        name = "BackendError" if not isinstance(exc, AstrowatchError) else next(
            (c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), "BackendError")
    message = str(exc) if isinstance(exc, AstrowatchError) else f"{type(exc).__name__}: {exc}"
    return {"status": status, "schema": SCHEMA, "astrowatch": __version__, "worker": worker, "device": device,
            "error_class": name, "message": message}


def check_answer(data: Any) -> dict[str, Any]:
    """A worker's answer that says ``ok``, or the error it carried, raised."""
    if not isinstance(data, dict) or "status" not in data:
        raise BackendError(f"a worker answered something that is not an astrowatch result: {str(data)[:200]}")
    worker = data.get("worker", "?")
    if data["status"] == "rejected":
        raise BackendUnavailable(data.get("message", "rejected by a worker"))
    if data["status"] != "ok":
        cls = _ERRORS.get(data.get("error_class", ""), BackendError)
        raise cls(f"{data.get('message')} (on worker {worker})")
    return data


def decode_captions(data: Any) -> dict[str, Any]:
    """The coordinator's side of a ``caption`` task: the caption record the worker made."""
    captions = check_answer(data).get("captions")
    if not isinstance(captions, dict):
        raise BackendError(f"worker {data.get('worker', '?')} answered a caption task without captions")
    return captions


def decode_result(data: Any, backend: str, get_png: Callable[[str], bytes | None] | None = None) -> Result:
    """The coordinator's side: a worker's answer -> :class:`Result`, or the error it carried."""
    from PIL import Image

    from astrowatch.backends.base import Result

    data = check_answer(data)
    worker = data.get("worker", "?")
    if "png_key" in data:
        raw = get_png(data["png_key"]) if get_png is not None else None
        if raw is None:
            raise BackendError(f"the image from worker {worker} is no longer in the broker ({data['png_key']})")
    else:
        raw = base64.b64decode(data["png_b64"])
    if hashlib.sha256(raw).hexdigest() != data.get("sha256"):
        raise BackendError(f"the image from worker {worker} does not match its sha256 (corrupted in transit)")
    image = Image.open(io.BytesIO(raw))  # lazy: pixels are decoded only if something needs them
    image.encoded_png = raw  # type: ignore[attr-defined]  # written to the inbox as is (storage.images.png_bytes)
    extra = dict(data.get("extra") or {})
    extra["remote"] = {"worker": worker, "device": data.get("device"), "astrowatch": data.get("astrowatch"),
                       "seconds": data.get("seconds"), "sha256": data["sha256"]}
    return Result(image=image, backend=data.get("backend") or backend, model=data.get("model"),
                  params=data.get("params") or {}, seed=data.get("seed"), prompt=data.get("prompt"),
                  negative_prompt=data.get("negative_prompt"), description=data.get("description") or "",
                  infotext=data.get("infotext"), extra=extra,
                  captions=data["captions"] if isinstance(data.get("captions"), dict) else None)


def blob_bytes(blob: dict[str, Any], data_dir: Path | None) -> bytes:
    """The worker's side: an input blob -> its bytes (inline, or a path under the shared data folder)."""
    if "b64" in blob:
        data = base64.b64decode(blob["b64"])
    else:
        if data_dir is None:
            raise ConfigError("a task names a shared path but this worker has no data folder mounted")
        root = data_dir.resolve()
        path = (root / blob["path"]).resolve()
        if root not in path.parents:
            raise InputError(f"{blob['path']}: outside the shared data folder")
        data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != blob.get("sha256"):
        raise InputError(f"{blob.get('name')}: input does not match its sha256 (changed or corrupted in transit)")
    return data
