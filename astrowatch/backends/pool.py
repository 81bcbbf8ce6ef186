"""Started backends by name, for one worker (one device), and where their model work runs.

``executor: local`` (default): the backend runs in this process, on this host's device
(:func:`astrowatch.backends.registry.create_backend`).  ``executor: celery``: the backend is a
:class:`astrowatch.backends.remote.client.RemoteBackend` whose ``generate``/``enhance`` run on an
``astrowatch worker`` (another host) through Celery + Redis; the thread that claimed the job still
does everything else (fusion, preprocessing, cache, publishing, state changes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.backends.registry import create_backend
from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import Backend
    from astrowatch.core.config import Config

log = structlog.get_logger("astrowatch.worker")


def new_backend(name: str, kind: str, config: Config, *, device: str | None = None) -> Backend:
    if kind == "caption":  # always local: under executor: celery only ``astrowatch worker`` asks for it
        from astrowatch.backends.caption.service import CaptionService

        return CaptionService(config, device=device)
    if getattr(config, "executor", "local") == "celery":
        from astrowatch.backends.remote.client import RemoteBackend

        return RemoteBackend(name, kind, config)
    return create_backend(name, kind, config, device=device)


class BackendPool:
    """Started backends by name, for one worker (one device).  Not shared across threads."""

    def __init__(self, config: Config, device: str | None = None) -> None:
        self.config = config
        self.device = device
        self._backends: dict[str, Backend] = {}
        self._started: set[str] = set()
        self.load_seconds: dict[str, float] = {}

    def forget(self, name: str) -> None:
        """Close and drop one backend: the next :meth:`get` starts it again (re-reads its key)."""
        backend = self._backends.pop(name, None)
        self._started.discard(name)
        if backend is not None:
            backend.close()

    def get(self, kind: str, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            backend = new_backend(name, kind, self.config, device=self.device)
            self._backends[name] = backend
        if kind not in backend.kinds:
            raise ConfigError(f"backend {name!r} cannot do {kind} jobs")
        if name not in self._started:
            t0 = time.monotonic()
            backend.start()  # BackendUnavailable propagates: the job waits
            self.load_seconds[name] = round(time.monotonic() - t0, 3)
            self._started.add(name)
        return backend

    def reload(self, config: Config) -> list[str]:
        """Keep backends whose settings did not change; close the others.  Returns closed names."""
        closed = []
        for name, backend in list(self._backends.items()):
            old_key = backend.settings_key()
            backend.config = config
            if backend.settings_key() != old_key:
                backend.config = self.config
                backend.close()
                del self._backends[name]
                self._started.discard(name)
                closed.append(name)
        self.config = config
        return closed

    def describe(self) -> dict[str, Any]:
        return {name: {**b.describe(), "load_seconds": self.load_seconds.get(name)}
                for name, b in self._backends.items()}

    def close(self) -> None:
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:
                log.exception("backend close failed", backend=backend.name)
        self._backends.clear()
        self._started.clear()
