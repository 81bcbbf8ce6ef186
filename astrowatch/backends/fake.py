"""The ``fake`` backend: real images, instantly, with fault injection (``fake:`` config section).

It is a real backend (same interface, same worker path), not a patch: tests and benchmarks
use it to rehearse failures — fail the first N attempts, hang, raise a given error class.
Attempt counting is per job and in memory, so "fail N times" spans retries, not restarts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import TYPE_CHECKING, Any

from astrowatch.backends.base import AstroTask, Backend, EnhanceTask, Result
from astrowatch.core.errors import BackendError, BackendUnavailable, InputError, PermanentBackendError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

_ERRORS = {"input": InputError, "backend": BackendError, "permanent": PermanentBackendError,
           "unavailable": BackendUnavailable}


class FakeBackend(Backend):
    name = "fake"
    kinds = frozenset({"astro", "enhance"})

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.calls: Counter[str] = Counter()

    def _faults(self, job_id: str, params: dict[str, Any], cancel: Any) -> None:
        cfg = self.config.fake
        fail_times = int(params.get("fail_times", cfg.fail_times))
        if fail_times:  # counted only then: nothing kept per job otherwise (a soak's memory stays flat)
            self.calls[job_id] += 1
        hang = float(params.get("hang_seconds", cfg.hang_seconds))
        if hang:
            cancel.sleep(hang)
        if cfg.delay_seconds:
            cancel.sleep(cfg.delay_seconds)
        if fail_times and self.calls[job_id] <= fail_times:
            raise BackendError(f"fake failure {self.calls[job_id]} of {fail_times}")
        kind = params.get("raise_error", cfg.raise_error)
        if kind != "none":
            raise _ERRORS[kind](f"fake {kind} error")

    def _image(self, seed: int, size: tuple[int, int]) -> Image.Image:
        from PIL import Image

        digest = hashlib.sha256(str(seed).encode()).digest()
        img = Image.new("RGB", size, tuple(digest[:3]))
        img.paste(tuple(digest[3:6]), (0, 0, size[0] // 2, size[1] // 2))
        return img

    def generate(self, task: AstroTask) -> Result:
        self._faults(task.job_id, task.params, task.cancel)
        size = int(task.params.get("size", self.config.fake.size))
        return Result(image=self._image(task.seed, (size, size)), backend=self.name, model="fake",
                      params={"size": size}, seed=task.seed, prompt=task.prompt,
                      negative_prompt=task.negative_prompt, description=f"fake image for {task.user}")

    def enhance(self, task: EnhanceTask) -> Result:
        self._faults(task.job_id, task.params, task.cancel)
        factor = float(task.params.get("scale_factor", self.config.enhance.scale_factor))
        w, h = task.image.size
        image = task.image.resize((round(w * factor), round(h * factor)))
        return Result(image=image, backend=self.name, model="fake", params={"scale_factor": factor},
                      seed=task.seed, description=f"fake enhancement of {task.source_name}")
