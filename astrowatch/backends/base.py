"""The one small interface every backend implements (the registry that picks one by name is
:mod:`astrowatch.backends.registry`).

A backend turns a task into a :class:`Result` (a PIL image plus what produced it).  It does
not touch the data folders, the ledger or the review flow: the worker does that.  Heavy
libraries (torch, diffusers, requests...) are imported inside the backend module, and backend
modules are imported only when chosen, so the CLI and the daemon core stay light.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from astrowatch.core.errors import Interrupted, JobTimedOut

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.chart import Chart
    from astrowatch.core.config import Config


class CancelToken:
    """Cooperative cancellation shared by the daemon and the worker.

    ``stop`` (first SIGTERM): finish the current image, take no new job.
    ``interrupt`` (second SIGTERM): abandon the current image at the next safe point; the job is
    resumed at the next start.

    :meth:`for_job` gives one job its own token: the same stop and interrupt, plus a deadline
    (``limits.job_timeout_seconds``).  Past it the token reads as interrupted, so the backends'
    existing stop points (a diffusion step callback, a WebUI ``/interrupt``, a polling or retry
    sleep) end the job, and :meth:`check` raises :class:`JobTimedOut` instead of
    :class:`Interrupted`.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self.deadline: float | None = None  # time.monotonic() past which the job is out of time
        self.limit_s: float | None = None

    def for_job(self, limit_s: float | None) -> CancelToken:
        """A token for one job: this token's stop and interrupt, and a deadline ``limit_s`` from now."""
        token = CancelToken()
        token._stop, token._interrupt = self._stop, self._interrupt
        if limit_s is not None:
            token.limit_s, token.deadline = limit_s, time.monotonic() + limit_s
        return token

    def request_stop(self) -> None:
        self._stop.set()

    def request_interrupt(self) -> None:
        self._stop.set()
        self._interrupt.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def interrupted(self) -> bool:
        """True once the job must stop now: a second SIGTERM, or its deadline passed."""
        return self._interrupt.is_set() or self.timed_out

    def timeout_error(self) -> JobTimedOut:
        return JobTimedOut(f"ran longer than limits.job_timeout_seconds={self.limit_s:g} s")

    def check(self) -> None:
        """Raise :class:`Interrupted` if an interrupt was requested, :class:`JobTimedOut` past the
        deadline (call between steps)."""
        if self._interrupt.is_set():
            raise Interrupted("interrupted by shutdown; the job resumes at the next start")
        if self.timed_out:
            raise self.timeout_error()

    def wait_interrupt(self, timeout: float | None = None) -> bool:
        """Block until an interrupt is requested or the deadline passes (True), or ``timeout``
        passes (False)."""
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        return self._interrupt.wait(timeout) or self.timed_out

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes up (and raises) on interrupt or at the deadline."""
        if self.wait_interrupt(seconds):
            self.check()


class Progress:
    """Step progress of the job a worker runs: written by the backend (between steps, from a
    poller thread), read by the daemon for ``status``, ``STATUS=`` and the review page.

    Each update replaces one dict (atomic under the GIL); readers take a :meth:`snapshot`.
    """

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None

    def start(self, job_id: str) -> None:
        self._state = {"job_id": job_id, "started": time.time(), "step": 0, "total": None, "eta": None}

    def clear(self) -> None:
        self._state = None

    def report(self, step: int, total: int | None, *, eta_s: float | None = None) -> None:
        """``step`` of ``total`` done (``eta_s``: the backend's own estimate of the time left)."""
        if self._state is not None:
            self._state = {**self._state, "step": int(step), "total": int(total) if total else None,
                           "eta": eta_s, "at": time.time()}

    def snapshot(self) -> dict[str, Any] | None:
        """``{"job_id", "step", "total", "elapsed_s", "eta_s"}``, or None when idle."""
        state = self._state
        if state is None:
            return None
        now = time.time()
        step, total, eta = state["step"], state["total"], state["eta"]
        if eta is None and total and step:  # the pace so far
            eta = (state["at"] - state["started"]) / step * (total - step)
        if eta is not None and "at" in state:  # counted from the last report
            eta = max(float(eta) - (now - state["at"]), 0.0)
        return {"job_id": state["job_id"], "step": step, "total": total,
                "elapsed_s": round(now - state["started"], 1), "eta_s": None if eta is None else round(eta, 1)}


def progress_text(p: dict[str, Any] | None) -> str:
    """``step 12/30, 4.1 s elapsed, ETA 6.2 s`` (one line for ``status``, ``STATUS=`` and the UI)."""
    if not p:
        return ""
    steps = f"step {p['step']}/{p['total']}, " if p.get("total") else ""
    eta = f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None else ""
    return f"{steps}{p['elapsed_s']:.0f} s elapsed{eta}"


@dataclass
class AstroTask:
    job_id: str
    user: str
    chart: Chart
    params: dict[str, Any]  # effective job parameters (config defaults + overrides)
    seed: int
    prompt: str
    negative_prompt: str
    fusion: dict[str, Any] = field(default_factory=dict)  # prompt-fusion output, recorded as is
    init_image: Path | None = None  # moodboard or chart wheel, for backends that take one
    style_image: Path | None = None  # the style reference (sdxl.ip_adapter): a decoded copy of the moodboard
    style_sha256: str | None = None  # the reference file's hash, recorded with the result
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: Progress = field(default_factory=Progress)


@dataclass
class EnhanceTask:
    job_id: str
    user: str
    image: Image  # preprocessed: EXIF-rotated, RGB
    source_name: str
    params: dict[str, Any]
    seed: int
    facts: dict[str, Any] = field(default_factory=dict)  # technical facts (size, grayscale, exif)
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: Progress = field(default_factory=Progress)
    source: Path | None = None  # the file ``image`` was preprocessed from (a remote worker gets its bytes)
    caption_params: dict[str, Any] = field(default_factory=dict)  # the job's caption overrides (a redo's)


@dataclass
class Result:
    image: Image
    backend: str
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the parameters really used
    seed: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    description: str = ""  # reviewer-facing text; line 1 is the training caption for enhance
    infotext: str | None = None  # A1111 "parameters" text written into the PNG
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"cache": "hit"}
    captions: dict[str, Any] | None = None  # the caption record a remote worker made (never cached)


class Backend:
    """Base class. Subclasses set ``name`` and ``kinds`` and override what they support."""

    name: ClassVar[str] = "base"
    kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Config) -> None:
        self.config = config

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Load models / check the server once, before the daemon reports READY."""

    def health(self) -> None:
        """Raise :class:`~astrowatch.core.errors.BackendUnavailable` while the backend is down."""

    def close(self) -> None:
        """Release models, sessions, GPU memory."""

    def settings_key(self) -> Any:
        """What, if changed by a reload, requires a fresh instance (default: the whole section)."""
        section = getattr(self.config, self.name, None)
        return section.model_dump(mode="json") if section is not None else None

    def describe(self) -> dict[str, Any]:
        """A short dict for ``astrowatch status``."""
        return {"name": self.name}

    # -- work --------------------------------------------------------------------------------
    def generate(self, task: AstroTask) -> Result:
        raise NotImplementedError(f"backend {self.name!r} does not generate astro images")

    def generate_variants(self, task: AstroTask, seeds: list[int]) -> list[Result]:
        """One image per seed (``astro.variants``).  This default makes them one after another;
        a backend that batches (SDXL ``num_images_per_prompt``, the WebUI's ``batch_size``)
        overrides it with one call.  Each result records its own seed."""
        from dataclasses import replace

        results = []
        for seed in seeds:
            task.cancel.check()
            results.append(self.generate(replace(task, seed=seed)))
        return results

    def enhance(self, task: EnhanceTask) -> Result:
        raise NotImplementedError(f"backend {self.name!r} does not enhance images")
