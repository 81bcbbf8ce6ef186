"""Where a job's model work runs: the seam between the worker threads and the backends.

``executor: local`` (default): one worker thread per device, the backend in this process.
``executor: celery``: one dispatcher thread per job in flight, each backend a
:class:`astrowatch.backends.remote.client.RemoteBackend` (built by
:func:`astrowatch.backends.pool.new_backend`) whose ``generate``/``enhance`` run on an
``astrowatch worker`` (another host) through Celery + Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config


def dispatchers(config: Config) -> int | None:
    """How many worker threads dispatch at once with a remote executor (None: local, one per device)."""
    return config.celery.max_in_flight if getattr(config, "executor", "local") == "celery" else None
