"""What happens to a job after an error: a pure function of the error's class, the job's attempt
count and ``retries`` — never of the message.

- disk full (ENOSPC, SQLITE_FULL, under ``limits.min_free_mb``; whatever wrapped it) -> wait for
  space (attempt not counted)
- ``CredentialsRejected`` -> pause the backend: its jobs wait until a health check passes
- ``BackendUnavailable``  -> wait for the backend (attempt not counted)
- ``Interrupted``         -> back to ``queued`` (attempt not counted), resumed at the next start
- retryable, attempts left -> ``queued`` again after ``backoff_seconds * 2**(attempt-1)``, at most
  ``backoff_max_seconds``
- otherwise                -> failed (``cause``: :data:`FAILED_FOR_INPUT` for a bad input, else the
  exception's class name)

An exception that is not an :class:`AstrowatchError` (a bug, a library's surprise) counts as a
retryable :class:`BackendError` named after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from astrowatch.core.config import RetriesConfig
from astrowatch.core.errors import (
    AstrowatchError,
    BackendError,
    BackendUnavailable,
    CredentialsRejected,
    InputError,
    Interrupted,
    as_disk_full,
)
from astrowatch.storage.ledger import FAILED_FOR_INPUT


class Action(StrEnum):
    WAIT_FOR_DISK = "wait for disk"
    PAUSE_BACKEND = "pause backend"
    WAIT_FOR_BACKEND = "wait for backend"
    REQUEUE = "requeue"  # interrupted by shutdown
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Next:
    """The decision: ``action``, and for a retry its ``delay`` (seconds); ``reason`` is what the
    ledger records as the job's error; ``cause`` the failure's class (history note);
    ``unexpected``: not an astrowatch error (the worker logs its traceback)."""

    action: Action
    reason: str = ""
    delay: float = 0.0
    cause: str | None = None
    unexpected: bool = False


def backoff(attempts: int, retries: RetriesConfig) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped."""
    return min(retries.backoff_seconds * 2.0 ** (attempts - 1), retries.backoff_max_seconds)


def next_step(exc: BaseException, attempts: int, retries: RetriesConfig) -> Next:
    """What to do with a job whose attempt number ``attempts`` (counted when it was claimed)
    raised ``exc``."""
    full = as_disk_full(exc)
    if full is not None:  # the machine's fault: checked first, whatever wrapped it
        return Next(Action.WAIT_FOR_DISK, str(full))
    if isinstance(exc, CredentialsRejected):  # key revoked, quota gone: the backend pauses
        return Next(Action.PAUSE_BACKEND, str(exc))
    if isinstance(exc, BackendUnavailable):
        return Next(Action.WAIT_FOR_BACKEND, str(exc))
    if isinstance(exc, Interrupted):
        return Next(Action.REQUEUE, str(exc))
    unexpected = not isinstance(exc, AstrowatchError)
    error = exc if isinstance(exc, AstrowatchError) else BackendError(f"{type(exc).__name__}: {exc}")
    if error.retryable and attempts < retries.max_attempts:
        return Next(Action.RETRY, str(error), delay=backoff(attempts, retries), unexpected=unexpected)
    reason = str(error) if not error.retryable else f"{error} (after {attempts} attempts)"
    cause = FAILED_FOR_INPUT if isinstance(error, InputError) else type(error).__name__
    return Next(Action.FAIL, reason, cause=cause, unexpected=unexpected)
