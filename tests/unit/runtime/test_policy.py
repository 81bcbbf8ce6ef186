"""runtime.policy.next_step: every branch of the error -> what-happens-next decision, in process."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from astrowatch.core.config import RetriesConfig
from astrowatch.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    CredentialsRejected,
    DiskFull,
    InputError,
    Interrupted,
    PermanentBackendError,
    UnsafePathError,
)
from astrowatch.runtime.policy import Action, Next, backoff, next_step
from astrowatch.storage.ledger import FAILED_FOR_INPUT

RETRIES = RetriesConfig(max_attempts=3, backoff_seconds=5.0, backoff_max_seconds=300.0)


def _sqlite_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # SQLITE_FULL, as sqlite3 sets it
    return exc


@pytest.mark.parametrize("exc", [
    DiskFull("under limits.min_free_mb"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    _sqlite_full(),
])
def test_a_full_disk_waits_whatever_the_attempt(exc):
    for attempts in (1, 3, 99):
        step = next_step(exc, attempts, RETRIES)
        assert step.action is Action.WAIT_FOR_DISK and step.delay == 0 and not step.unexpected


def test_a_full_disk_is_found_under_what_wrapped_it():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise BackendError("could not write the cache") from inner
    except BackendError as exc:
        assert next_step(exc, 3, RETRIES).action is Action.WAIT_FOR_DISK


def test_refused_credentials_pause_the_backend_even_though_they_are_a_config_error():
    step = next_step(CredentialsRejected("401 from the WebUI"), 1, RETRIES)
    assert step == Next(Action.PAUSE_BACKEND, "401 from the WebUI")


def test_an_unavailable_backend_makes_the_job_wait_even_at_its_last_attempt():
    step = next_step(BackendUnavailable("connection refused"), 3, RETRIES)
    assert step == Next(Action.WAIT_FOR_BACKEND, "connection refused")


def test_an_interrupted_job_is_queued_again():
    step = next_step(Interrupted("interrupted by shutdown"), 3, RETRIES)
    assert step == Next(Action.REQUEUE, "interrupted by shutdown")


@pytest.mark.parametrize(("attempts", "delay"), [(1, 5.0), (2, 10.0)])
def test_a_retryable_error_with_attempts_left_is_retried_with_exponential_backoff(attempts, delay):
    step = next_step(BackendError("CUDA hiccup"), attempts, RETRIES)
    assert step == Next(Action.RETRY, "CUDA hiccup", delay=delay)


def test_the_backoff_is_capped():
    retries = RetriesConfig(max_attempts=20, backoff_seconds=5.0, backoff_max_seconds=60.0)
    assert [backoff(n, retries) for n in (1, 2, 3, 4, 5, 10)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert next_step(BackendError("x"), 10, retries).delay == 60.0


def test_a_retryable_error_at_the_last_attempt_fails_naming_the_attempts():
    step = next_step(BackendError("CUDA hiccup"), 3, RETRIES)
    assert step == Next(Action.FAIL, "CUDA hiccup (after 3 attempts)", cause="BackendError")


@pytest.mark.parametrize(("exc", "cause"), [
    (InputError("truncated image"), FAILED_FOR_INPUT),
    (UnsafePathError("../etc"), FAILED_FOR_INPUT),
    (PermanentBackendError("content policy"), "PermanentBackendError"),
    (ConfigError("bad key"), "ConfigError"),
])
def test_a_non_retryable_error_fails_at_once_with_its_cause(exc, cause):
    step = next_step(exc, 1, RETRIES)
    assert step == Next(Action.FAIL, str(exc), cause=cause)


def test_an_unexpected_exception_counts_as_a_retryable_backend_error():
    step = next_step(KeyError("steps"), 1, RETRIES)
    assert step == Next(Action.RETRY, "KeyError: 'steps'", delay=5.0, unexpected=True)
    step = next_step(ValueError("nan"), 3, RETRIES)
    assert step == Next(Action.FAIL, "ValueError: nan (after 3 attempts)", cause="BackendError", unexpected=True)


def test_the_decision_is_a_frozen_value():
    step = next_step(BackendError("x"), 1, RETRIES)
    with pytest.raises(AttributeError):
        step.delay = 0.0  # type: ignore[misc]  # frozen dataclass: assignment must raise
