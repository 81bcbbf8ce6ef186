"""Where a job's model work runs: the seam between the worker thread and the backend.

``executor: local`` (default): the backend runs in this process, on this host's device —
:func:`astrowatch.backends.base.create_backend`, exactly as before.  ``executor: celery``: the
backend is a :class:`astrowatch.backends.remote.client.RemoteBackend` whose ``generate``/``enhance`` run
on an ``astrowatch worker`` (another host) through Celery + Redis; the worker thread that claimed
the job still does everything else (fusion, preprocessing, cache, publishing, state changes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from astrowatch.backends.base import create_backend

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import Backend
    from astrowatch.core.config import Config


def new_backend(name: str, kind: str, config: Config, *, device: str | None = None) -> Backend:
    if getattr(config, "executor", "local") == "celery":
        from astrowatch.backends.remote.client import RemoteBackend

        return RemoteBackend(name, kind, config)
    return create_backend(name, kind, config, device=device)


def dispatchers(config: Config) -> int | None:
    """How many worker threads dispatch at once with a remote executor (None: local, one per device)."""
    return config.celery.max_in_flight if getattr(config, "executor", "local") == "celery" else None
