"""OpenAI Images backend (``astro.backend: openai``): ``POST {base_url}/images/generations``.

Plain HTTP with one :class:`requests.Session`; ``openai.base_url`` may name a compatible server.
The service takes no seed and no negative prompt: both are recorded as not honoured, not faked.
The API key comes from ``$OPENAI_API_KEY``, else ``openai.api_key_file``, else
``$CREDENTIALS_DIRECTORY/openai_api_key`` (systemd ``LoadCredential=``).  It never reaches logs,
exceptions, results, :meth:`~OpenAIBackend.describe` or ``repr``; server error text is scrubbed.

Errors: 429/408/409/5xx are retried here (exponential back-off honouring ``Retry-After`` and
``retry-after-ms``, at most ``openai.max_retries`` times, waiting in ``task.cancel.sleep`` so a
shutdown interrupt ends the wait), then a retryable :class:`BackendError`.  401/403 and 429
``insufficient_quota`` -> :class:`CredentialsRejected` (a ConfigError; mid-run the worker pauses
the backend).  Content-policy refusals and other 4xx -> :class:`PermanentBackendError` with the
service's message.  Connection refused (nothing sent) -> retried, then :class:`BackendUnavailable`.
A read timeout or a connection dropped after sending may have been billed, so the POST is **never
re-sent here**: the attempt fails with a retryable :class:`BackendError`; if the worker retries the job
later, that is a new, separately billed request.  An interrupt does not abort a POST in flight (``openai.timeout`` bounds it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import requests

from astrowatch import __version__
from astrowatch.backends.base import AstroTask, Backend, CancelToken, Result
from astrowatch.backends.infotext import format_infotext
from astrowatch.backends.openai.support import (
    ApiKey,
    BearerAuth,
    Transient,
    backoff_delay,
    decode_b64_image,
    error_fields,
    failed_before_sending,
    redact,
    resolve_api_key,
    retry_after_seconds,
    safe_url,
)
from astrowatch.core.errors import BackendError, BackendUnavailable, ConfigError, CredentialsRejected, PermanentBackendError

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.core.config import Config, OpenAIConfig

log = logging.getLogger("astrowatch.backends.openai_images")  # as in support.py: one logger for the backend

POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
POLICY_TYPES = frozenset({"image_generation_user_error"})
RETRY_STATUSES = frozenset({408, 409, 429})
# (sizes, qualities) of the models we know; other models (compatible servers) are not checked.
MODEL_OPTIONS = {
    "gpt-image": ({"auto", "1024x1024", "1536x1024", "1024x1536"}, {"auto", "low", "medium", "high"}),
    "dall-e-3": ({"1024x1024", "1792x1024", "1024x1792"}, {"auto", "standard", "hd"}),
    "dall-e-2": ({"256x256", "512x512", "1024x1024"}, {"auto", "standard"}),
}
# the models that make several images in one request (``n``, up to 10): dall-e-3 takes only n=1,
# and a model we do not know (a compatible server) gets one request per image
N_MODELS = ("gpt-image", "dall-e-2")
MAX_N = 10


def takes_n(model: str) -> bool:
    """Whether ``model`` makes several images in one request (``n`` > 1)."""
    return model.startswith(N_MODELS)


# -- the backend ------------------------------------------------------------------------------
class OpenAIBackend(Backend):
    """Astro images from the OpenAI Images API (``gpt-image-1`` by default, ``dall-e-3``...)."""

    name: ClassVar[str] = "openai"
    kinds: ClassVar[frozenset[str]] = frozenset({"astro"})

    def __init__(self, config: Config, *, max_retry_after: float = 120.0,
                 connect_timeout: float = 10.0) -> None:
        super().__init__(config)
        self.max_retry_after = max_retry_after  # a longer Retry-After fails the attempt instead
        self.connect_timeout = connect_timeout
        self._key: ApiKey | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        source = self._key.source if self._key else "unresolved"
        return f"<OpenAIBackend model={self.cfg.model!r} base_url={self.base_url!r} key_source={source}>"

    @property
    def cfg(self) -> OpenAIConfig:
        return self.config.openai

    @property
    def base_url(self) -> str:
        return safe_url(self.cfg.base_url.rstrip("/"))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Resolve the key and check size/quality; no network call. Raises :class:`ConfigError`."""
        self._check_model_options()
        self._key = resolve_api_key(self.cfg.api_key_file)
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = f"astrowatch/{__version__}"
        log.info("openai: model %s at %s, API key from %s", self.cfg.model, self.base_url, self._key.source)

    def _check_model_options(self) -> None:
        family = next((f for f in MODEL_OPTIONS if self.cfg.model.startswith(f)), None)
        if family is None:
            return
        for key, allowed in zip(("size", "quality"), MODEL_OPTIONS[family], strict=False):
            value = getattr(self.cfg, key)
            if value not in allowed:
                raise ConfigError(f"openai.{key} {value!r} is not possible with {self.cfg.model}; "
                                  f"use one of {', '.join(sorted(allowed))}")

    def _ready(self) -> tuple[requests.Session, ApiKey]:
        if self._session is None or self._key is None:
            self.start()
        assert self._session is not None and self._key is not None
        return self._session, self._key

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.cfg.model, "base_url": self.base_url,
                "size": self.cfg.size, "quality": self.cfg.quality,
                "key_source": self._key.source if self._key else None,
                "key_origin": self._key.origin if self._key else None}

    def health(self) -> None:
        """``GET {base_url}/models`` (free, 2 s): unreachable or 5xx -> :class:`BackendUnavailable`."""
        session, key = self._ready()
        url = f"{self.cfg.base_url.rstrip('/')}/models"
        resp: requests.Response | None = None
        try:
            resp = session.get(url, auth=BearerAuth(key), timeout=(2.0, 2.0))
        except requests.RequestException as exc:
            reason = type(exc).__name__
        if resp is None:  # raised outside ``except``: no chained request objects
            raise BackendUnavailable(f"OpenAI at {self.base_url} is unreachable ({reason})")
        if resp.status_code in (401, 403):
            raise self._key_error(resp)
        if resp.status_code >= 500:
            raise BackendUnavailable(f"OpenAI at {self.base_url} answers {resp.status_code}")

    # -- work --------------------------------------------------------------------------------
    def generate(self, task: AstroTask) -> Result:
        """Generate one image for ``task`` (see the module docstring for the error contract)."""
        self._ready()
        started = time.monotonic()
        resp, attempts = self._post_with_retries(self._payload(task.prompt), task.cancel)
        image, item, extra = self._parse_success(resp)
        extra.update(attempts=attempts, seconds=round(time.monotonic() - started, 3))
        log.info("openai: job %s generated in %.1fs (%d attempt(s), request %s)", task.job_id,
                 extra["seconds"], attempts, extra.get("request_id"))
        return self._result(task, image, item, extra)

    def generate_variants(self, task: AstroTask, seeds: list[int]) -> list[Result]:
        """Several variants (``astro.variants``): one request with ``n`` where the model takes it
        (gpt-image-*, dall-e-2), else one request each.  The service takes no seed: each result
        records its variant's seed (as not honoured), so a redo of a variant asks again."""
        if len(seeds) <= 1 or not takes_n(self.cfg.model) or len(seeds) > MAX_N:
            return super().generate_variants(task, seeds)
        from dataclasses import replace

        self._ready()
        started = time.monotonic()
        payload = {**self._payload(task.prompt), "n": len(seeds)}
        resp, attempts = self._post_with_retries(payload, task.cancel)
        images, items, extra = self._parse_all(resp)
        if len(images) != len(seeds):
            raise BackendError(f"OpenAI answered {len(images)} image(s) to a request for n={len(seeds)}")
        extra.update(attempts=attempts, seconds=round(time.monotonic() - started, 3), n=len(seeds))
        log.info("openai: job %s generated %d variants in one request in %.1fs (%d attempt(s), request %s)",
                 task.job_id, len(seeds), extra["seconds"], attempts, extra.get("request_id"))
        return [self._result(replace(task, seed=seed), image, item, dict(extra))
                for seed, image, item in zip(seeds, images, items, strict=True)]

    def _payload(self, prompt: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.cfg.model, "prompt": prompt, "n": 1, "size": self.cfg.size}
        dalle = self.cfg.model.startswith("dall-e")
        if not (dalle and self.cfg.quality == "auto"):  # dall-e: omit "auto", the service default
            payload["quality"] = self.cfg.quality
        if dalle:
            payload["response_format"] = "b64_json"  # gpt-image models refuse this parameter
        return payload

    def _post_with_retries(self, payload: dict[str, Any],
                           cancel: CancelToken) -> tuple[requests.Response, int]:
        max_retries = self.cfg.max_retries
        attempt = 0
        while True:
            cancel.check()
            outcome = self._post_once(payload)
            if isinstance(outcome, requests.Response):
                return outcome, attempt + 1
            if attempt >= max_retries:
                raise outcome.final(attempt + 1)
            if outcome.retry_after is not None and outcome.retry_after > self.max_retry_after:
                raise BackendError(f"{outcome.message}; the service asks to wait {outcome.retry_after:.0f}s, "
                                   f"longer than this backend waits ({self.max_retry_after:.0f}s)")
            cfg = self.cfg
            delay = backoff_delay(attempt, cfg.retry_backoff, cfg.retry_backoff_max, outcome.retry_after)
            log.warning("openai: %s; retry %d/%d in %.2fs", outcome.message, attempt + 1, max_retries, delay)
            cancel.sleep(delay)
            attempt += 1

    def _post_once(self, payload: dict[str, Any]) -> requests.Response | Transient:
        """One POST. Returns a 2xx response or a retryable outcome; raises the final errors."""
        session, key = self._ready()
        url = f"{self.cfg.base_url.rstrip('/')}/images/generations"
        billed = ("; the request may have been billed, so it is not re-sent now "
                  "(a retry of the job later is a new request)")
        failure: BackendError | Transient
        try:
            resp = session.post(url, json=payload, auth=BearerAuth(key),
                                timeout=(self.connect_timeout, self.cfg.timeout))
        except requests.exceptions.ReadTimeout:
            failure = BackendError(f"OpenAI did not answer within openai.timeout={self.cfg.timeout:g}s"
                                   + billed)
        except requests.ConnectionError as exc:
            if failed_before_sending(exc):
                failure = Transient(f"cannot connect to OpenAI at {self.base_url}", unavailable=True)
            else:
                failure = BackendError(f"the connection to {self.base_url} broke after the request "
                                       f"was sent{billed}")
        except requests.RequestException as exc:
            failure = BackendError(f"reading the answer from {self.base_url} failed "
                                   f"({type(exc).__name__}){billed}")
        else:
            return self._check_status(resp)
        if isinstance(failure, BackendError):  # raised outside ``except``: no chained request objects
            raise failure
        return failure

    def _key_error(self, resp: requests.Response) -> CredentialsRejected:
        message = redact(error_fields(resp)[0], self._key)
        origin = self._key.origin if self._key else "?"
        return CredentialsRejected(f"OpenAI rejected the API key ({resp.status_code}): check OPENAI_API_KEY / "
                           f"openai.api_key_file (key from {origin}); the service said: {message}")

    def _check_status(self, resp: requests.Response) -> requests.Response | Transient:
        status = resp.status_code
        if 200 <= status < 300:
            return resp
        if status in (401, 403):
            raise self._key_error(resp)
        raw_message, etype, code = error_fields(resp)
        message = redact(raw_message, self._key)
        if status == 429 and "insufficient_quota" in (code, etype):
            raise CredentialsRejected(f"OpenAI says the account is out of quota (429 insufficient_quota): {message}",
                              hint="check the plan and billing of the OpenAI account")
        if status in RETRY_STATUSES or status >= 500:
            return Transient(f"OpenAI answered {status}: {message}", retry_after_seconds(resp.headers))
        if status == 400 and (code in POLICY_CODES or etype in POLICY_TYPES):
            raise PermanentBackendError(f"OpenAI refused the prompt (content policy, {code or etype}): "
                                        + message)
        what = code or etype or "error"
        raise PermanentBackendError(f"OpenAI rejected the request ({status} {what}): {message}")

    def _parse_success(self, resp: requests.Response) -> tuple[Image, dict[str, Any], dict[str, Any]]:
        images, items, extra = self._parse_all(resp)
        return images[0], items[0], extra

    def _parse_all(self, resp: requests.Response) -> tuple[list[Image], list[dict[str, Any]], dict[str, Any]]:
        """Every image of the answer (``data[0..n-1]``), with their items and the request's record."""
        try:
            body = resp.json()
        except ValueError:
            raise BackendError(f"OpenAI answered {resp.status_code} with a body that is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        images, items = [], []
        for i, item in enumerate(data if isinstance(data, list) and data else [None]):
            if not isinstance(item, dict):
                raise PermanentBackendError(f"OpenAI answered without an image (no data[{i}] in the response)")
            items.append(item)
            b64 = item.get("b64_json")
            if not isinstance(b64, str) or not b64:
                why = " (it sent a URL: the server ignored response_format=b64_json)" if item.get("url") else ""
                raise PermanentBackendError(f"OpenAI answered without b64_json{why}")
            limits = self.config.limits
            images.append(decode_b64_image(b64, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels))
        extra: dict[str, Any] = {"request_id": resp.headers.get("x-request-id"),
                                 "created": body.get("created")}
        if isinstance(body.get("usage"), dict):
            extra["usage"] = body["usage"]
        return images, items, {k: v for k, v in extra.items() if v is not None}

    def _result(self, task: AstroTask, image: Image, item: dict[str, Any], extra: dict[str, Any]) -> Result:
        model, size, quality = self.cfg.model, self.cfg.size, self.cfg.quality
        revised = item.get("revised_prompt")
        revised = revised.strip() if isinstance(revised, str) and revised.strip() else None
        if revised:
            extra["revised_prompt"] = revised
        if task.negative_prompt:
            extra["ignored_negative_prompt"] = task.negative_prompt
        fields: dict[str, Any] = {"Seed": task.seed, "Size": size, "Model": model, "Quality": quality,
                                  "Backend": "openai", "Seed honoured": "no"}
        if revised:
            fields["Revised prompt"] = revised
        description = (f"Generated by the OpenAI Images API ({model}, {size}, quality {quality}); "
                       "the service takes no seed or negative prompt, so this image cannot be reproduced.")
        if revised:
            description += " The service rewrote the prompt; its version is kept as the revised prompt."
        return Result(image=image, backend=self.name, model=model,
                      params={"model": model, "size": size, "quality": quality, "seed_honoured": False,
                              "negative_prompt_honoured": False},
                      seed=task.seed, prompt=task.prompt, negative_prompt=None, description=description,
                      infotext=format_infotext(task.prompt, "", fields), extra=extra)
