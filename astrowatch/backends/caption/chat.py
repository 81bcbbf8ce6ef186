"""The ``openai`` captioner: a vision chat model asked through the configured OpenAI endpoint
(``openai.base_url``, ``openai.api_key_file``), the photo sent as a JPEG data URL in a Chat
Completions ``image_url`` part.  Retries 429/5xx like the image backend; never logs the key."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from astrowatch.backends.caption.text import DEFAULT_CHAT_PROMPT, clean_caption
from astrowatch.backends.openai.support import (
    ApiKey,
    BearerAuth,
    backoff_delay,
    error_fields,
    redact,
    resolve_api_key,
    retry_after_seconds,
    safe_url,
)
from astrowatch.core.errors import BackendError, BackendUnavailable, CredentialsRejected

if TYPE_CHECKING:  # pragma: no cover
    import requests
    from PIL.Image import Image

    from astrowatch.backends.base import CancelToken
    from astrowatch.core.config import Config

MAX_SIDE = 1024  # the photo is sent at most this big (the model tiles larger ones anyway)


def data_url(image: Image, max_side: int = MAX_SIDE) -> str:
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ChatCaptioner:
    name = "openai"

    def __init__(self, config: Config, model: str) -> None:
        import requests

        self.config = config
        self.model = model
        self.key: ApiKey = resolve_api_key(config.openai.api_key_file)
        self.session: requests.Session | None = requests.Session()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "base_url": safe_url(self.config.openai.base_url)}

    def payload(self, image: Image, prompt: str | None) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": 120, "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt or DEFAULT_CHAT_PROMPT},
            {"type": "image_url", "image_url": {"url": data_url(image)}}]}]}

    def caption(self, image: Image, prompt: str | None, cancel: CancelToken | None = None) -> str:
        cfg = self.config.openai
        body = self.payload(image, prompt)
        attempt = 0
        while True:
            if cancel is not None:
                cancel.check()
            status, answer, wait = self._post(body)
            if status == 200:
                return answer
            if attempt >= cfg.max_retries:
                raise BackendError(f"OpenAI chat caption: {answer} (after {attempt + 1} attempts)")
            delay = backoff_delay(attempt, cfg.retry_backoff, cfg.retry_backoff_max, wait)
            if cancel is not None:
                cancel.sleep(delay)
            attempt += 1

    def _post(self, body: dict[str, Any]) -> tuple[int, str, float | None]:
        """(200, caption, None), or (status, message, Retry-After) for a retryable answer."""
        import requests

        cfg = self.config.openai
        url = f"{cfg.base_url.rstrip('/')}/chat/completions"
        assert self.session is not None
        try:
            resp = self.session.post(url, json=body, auth=BearerAuth(self.key), timeout=(5.0, cfg.timeout))
        except requests.ConnectionError:
            raise BackendUnavailable(f"cannot connect to OpenAI at {safe_url(cfg.base_url)}") from None
        except requests.RequestException as exc:
            raise BackendError(f"OpenAI chat caption: {type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            raise CredentialsRejected(f"OpenAI rejected the API key ({resp.status_code}) for the chat caption: "
                                      + redact(error_fields(resp)[0], self.key))
        if resp.status_code == 429 or resp.status_code >= 500:
            return resp.status_code, f"OpenAI answered {resp.status_code}: " + redact(error_fields(resp)[0], self.key), \
                retry_after_seconds(resp.headers)
        if resp.status_code != 200:
            raise BackendError(f"OpenAI refused the chat caption ({resp.status_code}): "
                               + redact(error_fields(resp)[0], self.key))
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError("OpenAI chat caption: the answer has no choices[0].message.content") from None
        text = clean_caption(content if isinstance(content, str) else "")
        if not text:
            raise BackendError("OpenAI chat caption: the model answered with an empty caption")
        return 200, text, None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
