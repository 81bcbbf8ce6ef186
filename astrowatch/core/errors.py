"""Exception hierarchy.

Every error the daemon or the CLI can raise on purpose derives from :class:`AstrowatchError`.
Each class carries the process exit code the CLI uses (sysexits.h numbers) and whether a job
that failed with it may be retried.  The worker decides retry/fail/wait from these attributes
alone, never from the message.
"""

from __future__ import annotations

import errno


class AstrowatchError(Exception):
    """Base class. ``exit_code`` for the CLI, ``retryable`` for the worker."""

    exit_code = 1
    retryable = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(AstrowatchError):
    """The configuration is invalid: the operator must fix it. Never retried."""

    exit_code = 78  # EX_CONFIG


class CredentialsRejected(ConfigError):
    """A remote backend refused its credentials or has no quota left (OpenAI 401/403 or
    ``insufficient_quota``, WebUI 401).  At start-up a config error (exit 78); mid-run the
    worker pauses that backend: its jobs wait (``waiting``) until a health check every
    ``sdapi.health_interval`` or a SIGHUP finds it accepted again.  Never a job's own failure."""


class InputError(AstrowatchError):
    """A dropped file is unusable (malformed JSON, truncated image, bomb...). Never retried."""

    exit_code = 65  # EX_DATAERR


class UnsafePathError(InputError):
    """A path or user name would escape the data root or cannot be named safely."""


class BackendError(AstrowatchError):
    """A backend failed while producing a result. Retried up to ``retries.max_attempts``."""

    exit_code = 70  # EX_SOFTWARE
    retryable = True


class PermanentBackendError(BackendError):
    """The backend refused the request for a reason a retry cannot fix (4xx, policy...)."""

    retryable = False


class BackendUnavailable(BackendError):
    """The backend is down (WebUI not running...). Jobs wait; their attempts are not burnt."""

    exit_code = 69  # EX_UNAVAILABLE


class JobTimedOut(BackendError):
    """A job ran longer than ``limits.job_timeout_seconds``: stopped, and retried (the attempt
    counts) or failed with that reason."""


class Interrupted(AstrowatchError):
    """A job was interrupted by shutdown; it is resumed at the next start."""

    exit_code = 75  # EX_TEMPFAIL
    retryable = True


class LedgerError(AstrowatchError):
    """The ledger refused an operation (illegal state transition, lost compare-and-set)."""

    exit_code = 70


class IllegalTransition(LedgerError):
    """A state change not in :data:`astrowatch.storage.ledger.TRANSITIONS`."""


class NotFound(AstrowatchError):
    """A job, file or review item named on the command line does not exist."""

    exit_code = 66  # EX_NOINPUT


class AlreadyRunning(AstrowatchError):
    """Another daemon holds this data folder's lock (``state/daemon.lock``)."""

    exit_code = 75  # EX_TEMPFAIL: try again once the other one has stopped


class AccessDenied(AstrowatchError):
    """This user may not read or write something the command needs (group membership, modes)."""

    exit_code = 77  # EX_NOPERM
class DiskFull(AstrowatchError):
    """The data disk is full (ENOSPC, EDQUOT, SQLITE_FULL) or under ``limits.min_free_mb``: the
    machine's fault, never the input's.  Jobs wait (attempts not burnt) and resume when space is
    back; nothing is failed for it."""

    exit_code = 73  # EX_CANTCREAT
    retryable = True


SQLITE_FULL = 13


def as_disk_full(exc: BaseException) -> DiskFull | None:
    """``exc`` as a :class:`DiskFull` if it says the disk is full (or was caused by that), else None."""
    seen: BaseException | None = exc
    for _ in range(5):  # the exception, then what caused it (a failed ROLLBACK hides a full disk)
        if seen is None:
            return None
        if isinstance(seen, DiskFull):
            return seen
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"no space left on device: {seen.filename or seen.strerror}")
        if getattr(seen, "sqlite_errorcode", None) == SQLITE_FULL:
            return DiskFull("the ledger cannot write: database or disk is full")
        seen = seen.__cause__ or seen.__context__
    return None
