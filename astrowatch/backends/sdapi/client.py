"""HTTP client for the Stable Diffusion WebUI API (AUTOMATIC1111 / Forge, started with ``--api``).

The WebUI serialises all work behind one lock and simply blocks, so: one ``requests.Session``,
a short connect timeout, a long read timeout, and retries (tenacity, exponential backoff with
jitter) only where re-sending cannot queue a second job:

* the connection was never established (refused, unreachable, connect timeout);
* 502/503 (a proxy, or a server that is starting); 504 too, but for a POST only after
  ``/sdapi/v1/progress`` says the WebUI is idle (the gateway timed out, not the job).

A POST whose answer was lost (read timeout, connection closed after sending) is NEVER re-sent:
the client polls ``/sdapi/v1/progress`` while the WebUI is busy (bounded: ``read_timeout``, 60 s at least)
and then fails the attempt with a retryable :class:`BackendError` (the worker retries the job
later), or :class:`BackendUnavailable` if the WebUI is gone.

Errors: 401 -> :class:`CredentialsRejected` (a ConfigError) naming ``sdapi.auth_file``; 422 and other 4xx, and 500 ->
:class:`PermanentBackendError` with the server's detail; still unreachable after the retries ->
:class:`BackendUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random
from urllib3.exceptions import ConnectTimeoutError  # NewConnectionError derives from it

from astrowatch import __version__
from astrowatch.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    CredentialsRejected,
    Interrupted,
    PermanentBackendError,
)

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import CancelToken, Progress
    from astrowatch.core.config import SdapiConfig

log = logging.getLogger("astrowatch.backends.sdapi_client")  # the name it had before the move

PROGRESS = "/sdapi/v1/progress"
PROGRESS_POLL = 0.5  # seconds between /progress polls while a job runs (status: at least once a second)
INTERRUPT = "/sdapi/v1/interrupt"
AUTH_HINT = "put the user:pass given to the WebUI's --api-auth in the file sdapi.auth_file names"
UNREACHABLE_HINT = "start the WebUI with --api, or fix sdapi.url"
WAIT_BUSY_MIN_SECONDS = 60.0  # after a lost answer, wait at least this long for the WebUI to go idle
INTERRUPTED = "interrupted by shutdown; the WebUI was told to stop (/sdapi/v1/interrupt)"


class _Retry(Exception):
    """Internal: this attempt failed in a way that is safe to re-send; ``final`` if retries run out."""

    def __init__(self, final: BackendError) -> None:
        super().__init__(str(final))
        self.final = final


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the TCP connection was never established, so the server cannot have the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 MaxRetryError wraps the cause
    return isinstance(reason, ConnectTimeoutError)


def _short_reason(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Connection reset", "timed out", "RemoteDisconnected",
                   "Connection aborted", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text[:160]


def server_detail(resp: requests.Response) -> str:
    """The server's explanation, without any secret this process loaded (it becomes a job's error)."""
    from astrowatch.core.secrets import redact

    return redact(_server_detail(resp))


def _server_detail(resp: requests.Response) -> str:
    """The server's explanation: FastAPI ``detail`` (str or list) or the WebUI's error dict."""
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:200] or resp.reason or f"HTTP {resp.status_code}"
    if not isinstance(data, dict):
        return str(data)[:300]
    detail = data.get("detail")
    if isinstance(detail, list):
        return "; ".join(_validation_item(item) for item in detail)
    message = detail or data.get("errors") or ""
    error = data.get("error")
    if error and error != "HTTPException":
        return f"{error}: {message}" if message else str(error)
    return str(message) or str(data)[:300]


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(p) for p in item.get("loc", []))
    return f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", item))


def job_running(progress: dict[str, Any]) -> bool:
    """The WebUI's own test: ``state.job_count == 0`` means idle (-1 = starting, >0 = running)."""
    state = progress.get("state") or {}
    return bool(state.get("job_count", 0)) or bool(state.get("job"))


def report_progress(progress: Progress, answer: dict[str, Any]) -> None:
    """``/sdapi/v1/progress`` -> steps (``state.sampling_step/steps``; else the fraction as a
    percentage) and the WebUI's own ``eta_relative``."""
    state = answer.get("state")
    state = state if isinstance(state, dict) else {}
    step, total = state.get("sampling_step"), state.get("sampling_steps")
    eta = answer.get("eta_relative")
    eta = float(eta) if isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta >= 0 else None
    if isinstance(total, int) and total > 0 and isinstance(step, int):
        progress.report(min(step, total), total, eta_s=eta)
    elif isinstance(answer.get("progress"), (int, float)):
        progress.report(round(float(answer["progress"]) * 100), 100, eta_s=eta)


class SdapiClient:
    """One session to one WebUI.  Thread-safe enough for one worker plus health/interrupt calls."""

    def __init__(self, cfg: SdapiConfig) -> None:
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        self.timeout = (cfg.connect_timeout, cfg.read_timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # a LAN/local WebUI: no proxy variables, no .netrc
        self.session.headers["User-Agent"] = f"astrowatch/{__version__}"
        if cfg.auth_file is not None:
            from astrowatch.core.secrets import read_secret_file, remember

            user, sep, password = read_secret_file(cfg.auth_file, "sdapi.auth_file").partition(":")
            if not sep or not user:
                raise ConfigError(f"sdapi.auth_file: {cfg.auth_file} must hold 'user:pass' "
                                  "(as given to the WebUI's --api-auth)")
            remember(password)
            self.session.auth = (user, password)

    def close(self) -> None:
        self.session.close()

    # -- public calls ----------------------------------------------------------------------------
    def get(self, path: str, *, retries: int | None = None, timeout: float | None = None) -> Any:
        limit = (self.cfg.connect_timeout, timeout or min(self.cfg.read_timeout, 60.0))
        return self._call("GET", path, None, None, limit, retries)

    def post(self, path: str, payload: dict[str, Any], *, cancel: CancelToken | None = None,
             progress: Progress | None = None) -> Any:
        """POST with the safe-retry policy; a second SIGTERM interrupts the WebUI's job; while it
        runs, ``/sdapi/v1/progress`` is polled into ``progress`` (every ``PROGRESS_POLL`` s)."""
        if cancel is not None:
            cancel.check()
        try:
            with self._interrupt_monitor(cancel), self._progress_monitor(progress):
                result = self._call("POST", path, payload, cancel, self.timeout, None)
        except BackendError as exc:
            if cancel is not None and cancel.interrupted:
                raise Interrupted(INTERRUPTED) from exc
            raise
        if cancel is not None and cancel.interrupted:
            raise Interrupted(INTERRUPTED)  # the WebUI returned its partial result: discard it
        return result

    def progress(self) -> dict[str, Any] | None:
        """``/sdapi/v1/progress`` or None when the WebUI does not answer (it answers while busy)."""
        try:
            resp = self.session.get(self.base + PROGRESS, params={"skip_current_image": "true"},
                                    timeout=(self.cfg.connect_timeout, min(self.cfg.read_timeout, 30.0)))
        except requests.RequestException:
            return None
        if resp.status_code == 401:
            raise CredentialsRejected(f"sdapi.auth_file: the WebUI at {self.base} refused the credentials (401)",
                                      hint=AUTH_HINT)
        if resp.status_code != 200:
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def interrupt(self) -> bool:
        """Ask the WebUI to stop its current job; True if it acknowledged."""
        try:
            resp = self.session.post(self.base + INTERRUPT, timeout=(self.cfg.connect_timeout, 10.0))
        except requests.RequestException as exc:
            log.warning("sdapi: could not send /sdapi/v1/interrupt: %s", _short_reason(exc))
            return False
        return resp.status_code == 200

    # -- retry loop ------------------------------------------------------------------------------
    def _retrying(self, cancel: CancelToken | None, retries: int | None) -> Retrying:
        count = self.cfg.max_retries if retries is None else retries
        backoff = self.cfg.retry_backoff
        return Retrying(
            stop=stop_after_attempt(count + 1),
            wait=wait_exponential(multiplier=backoff, max=self.cfg.retry_backoff_max) + wait_random(0, backoff),
            retry=retry_if_exception_type(_Retry),
            sleep=cancel.sleep if cancel is not None else time.sleep,
            before_sleep=lambda rs: log.info("sdapi: %s; retry %d/%d", rs.outcome.exception() if rs.outcome else None,
                                             rs.attempt_number, count),
            reraise=True,
        )

    def _call(self, method: str, path: str, payload: dict[str, Any] | None, cancel: CancelToken | None,
              timeout: tuple[float, float], retries: int | None) -> Any:
        try:
            for attempt in self._retrying(cancel, retries):
                with attempt:
                    return self._attempt(method, path, payload, cancel, timeout)
        except _Retry as exc:
            raise exc.final from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, method: str, path: str, payload: dict[str, Any] | None, cancel: CancelToken | None,
                 timeout: tuple[float, float]) -> Any:
        try:
            resp = self.session.request(method, self.base + path, json=payload, timeout=timeout)
        except requests.ConnectionError as exc:
            if _never_sent(exc) or method == "GET":
                raise _Retry(BackendUnavailable(f"no WebUI answers at {self.base} ({_short_reason(exc)})",
                                                hint=UNREACHABLE_HINT)) from None
            self._lost_response(path, f"connection closed without an answer ({_short_reason(exc)})", cancel)
        except requests.Timeout:
            if method == "GET":
                raise _Retry(BackendUnavailable(f"{path}: no answer within {timeout[1]}s")) from None
            self._lost_response(path, f"no answer within sdapi.read_timeout={timeout[1]}s", cancel)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ConfigError(f"sdapi.url {self.cfg.url!r} is not a usable URL ({exc})") from None
        except requests.RequestException as exc:  # a body cut short, undecodable content...
            if method == "GET":
                raise _Retry(BackendError(f"{path}: {_short_reason(exc)}")) from None
            self._lost_response(path, f"the answer was cut short ({_short_reason(exc)})", cancel)
        return self._decode(method, path, resp, cancel)

    def _decode(self, method: str, path: str, resp: requests.Response, cancel: CancelToken | None) -> Any:
        status = resp.status_code
        if 200 <= status < 300:
            try:
                return resp.json()
            except ValueError:
                raise BackendError(f"{path}: the WebUI answered {status} without JSON") from None
        if status == 401:
            raise CredentialsRejected(f"sdapi.auth_file: the WebUI at {self.base} refused the credentials "
                              f"({'none were sent' if self.cfg.auth_file is None else 'wrong user or password'})",
                              hint=AUTH_HINT)
        detail = server_detail(resp)
        if status in (502, 503, 504):
            if status == 504 and method == "POST":
                self._wait_idle(path, cancel)  # the gateway gave up, the WebUI may still be working
            raise _Retry(BackendUnavailable(f"{path}: HTTP {status} from the WebUI (or its proxy): {detail}"))
        if status == 422:
            raise PermanentBackendError(f"{path}: the WebUI rejected the request (422): {detail}")
        if 400 <= status < 500:
            raise PermanentBackendError(f"{path}: HTTP {status}: {detail}")
        raise PermanentBackendError(f"{path}: the WebUI failed (HTTP {status}): {detail}")

    # -- lost answers ----------------------------------------------------------------------------
    def _wait_idle(self, path: str, cancel: CancelToken | None) -> bool:
        """Poll /progress while a job runs (bounded). True once idle, False if the WebUI is gone."""
        bound = max(self.cfg.read_timeout, WAIT_BUSY_MIN_SECONDS)
        deadline = time.monotonic() + bound
        while True:
            state = self.progress()
            if state is None:
                return False
            if not job_running(state):
                return True
            if time.monotonic() >= deadline:
                raise BackendError(f"{path}: the WebUI is still busy {bound:g}s later; "
                                   "the request was not re-sent")
            if cancel is not None:
                if cancel.wait_interrupt(self.cfg.poll_interval):
                    raise Interrupted(INTERRUPTED)  # the monitor thread has sent /interrupt
            else:
                time.sleep(self.cfg.poll_interval)

    def _lost_response(self, path: str, why: str, cancel: CancelToken | None) -> None:
        """The POST may be running on the server: never re-send it, wait until idle, then fail."""
        log.warning("sdapi: %s: %s; polling %s instead of re-sending", path, why, PROGRESS)
        if not self._wait_idle(path, cancel):
            raise BackendUnavailable(f"{path}: {why}, and the WebUI no longer answers; the request was not "
                                     "re-sent", hint=UNREACHABLE_HINT)
        raise BackendError(f"{path}: the WebUI dropped the request ({why}); it was not re-sent, "
                           "the job will be retried")

    @contextmanager
    def _progress_monitor(self, progress: Progress | None) -> Iterator[None]:
        """A thread polling ``/sdapi/v1/progress`` while the POST is in flight."""
        if progress is None:
            yield
            return

        def poll(done: threading.Event) -> None:
            while not done.wait(PROGRESS_POLL):
                try:
                    state = self.progress()
                except ConfigError:
                    return
                if state is not None and not done.is_set():
                    report_progress(progress, state)

        with _beside("sdapi-progress", poll):
            yield

    @contextmanager
    def _interrupt_monitor(self, cancel: CancelToken | None) -> Iterator[None]:
        """While a POST is in flight, turn a second SIGTERM into ``POST /sdapi/v1/interrupt`` (once)."""
        if cancel is None:
            yield
            return
        lock, sent = threading.Lock(), [False]

        def fire() -> None:
            with lock:
                if sent[0]:
                    return
                sent[0] = True
            log.info("sdapi: interrupt requested; sending %s", INTERRUPT)
            self.interrupt()

        def watch(done: threading.Event) -> None:
            while not done.is_set():
                if cancel.wait_interrupt(0.05):
                    fire()
                    return

        try:
            with _beside("sdapi-interrupt", watch):
                yield
        finally:
            if cancel.interrupted:  # raced with the watcher (e.g. while polling /progress)
                fire()


@contextmanager
def _beside(name: str, loop: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``loop(done)`` in a daemon thread for the duration of the block; ``done`` is set and
    the thread joined (1 s at most) when the block ends, however it ends."""
    done = threading.Event()
    thread = threading.Thread(target=loop, args=(done,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)
