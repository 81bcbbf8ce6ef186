"""A stand-in for the OpenAI Images API on 127.0.0.1, for tests (real HTTP, no mocks).

Implements ``POST /v1/images/generations`` and ``GET /v1/models`` with the request checks and
the response / error shapes of the real service:

* ``Authorization: Bearer <key>`` checked first: missing -> 401 (``code: null``), wrong -> 401
  ``invalid_api_key`` with the key masked in the message, as the service does.
* body checks: not JSON, missing ``prompt``, unknown ``model``, ``size`` / ``quality`` / ``n`` not
  allowed for the model, ``response_format`` sent to a GPT image model -> 400
  ``invalid_request_error`` naming ``param``.
* success: ``{"created", "data": [{"b64_json"}], ...}`` with a real PNG of the requested size;
  ``dall-e-3`` adds ``revised_prompt``; GPT image models add ``usage`` / ``output_format``.

Failures are scripted for the next requests: ``server.script("429", retry_after="1")``,
``"500"``, ``"503"``, ``"policy"``, ``"quota"``, ``"hang"`` (sleep, then answer), ``"close"``
(read the request, drop the connection), or ``"error"`` with any status and body.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS: dict[str, tuple[set[str], set[str]]] = {  # model -> (sizes, qualities)
    "gpt-image-1": ({"auto", "1024x1024", "1536x1024", "1024x1536"}, {"auto", "low", "medium", "high"}),
    "gpt-image-1-mini": ({"auto", "1024x1024", "1536x1024", "1024x1536"}, {"auto", "low", "medium", "high"}),
    "dall-e-3": ({"1024x1024", "1792x1024", "1024x1792"}, {"auto", "standard", "hd"}),
    "dall-e-2": ({"256x256", "512x512", "1024x1024"}, {"auto", "standard"}),
}
POLICY_MESSAGE = {
    "dall-e": "Your request was rejected as a result of our safety system. Your prompt may contain "
              "text that is not allowed by our safety system.",
    "gpt-image": "Your request was rejected by the safety system. If you believe this is an error, "
                 "contact us and include the request ID req_0123.",
}


def error_body(message: str, etype: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def png_b64(width: int, height: int, index: int = 0) -> str:
    """A small picture; ``index`` (the image's place in an ``n`` > 1 answer) changes its background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (20 + 40 * index % 200, 24, 60))
    ImageDraw.Draw(img).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 190, 60))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Action:
    kind: str  # "429" "500" "503" "policy" "quota" "hang" "close" "error"
    retry_after: str | None = None
    seconds: float = 0.0
    status: int = 400
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeOpenAI:
    """Start with ``with FakeOpenAI(key) as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, api_key: str = "sk-test-0123456789abcdef", *, image_side: int | None = 64) -> None:
        self.api_key = api_key
        self.image_side = image_side  # None: the requested size (slower); else a square this big
        self.received: list[dict[str, Any]] = []  # generation requests: {"body", "headers", "time"}
        self.models_calls = 0
        self.chat_answer = "a red square on a white table"  # what /v1/chat/completions answers
        self.chat_received: list[dict[str, Any]] = []  # chat requests: {"body", "headers"}
        self._script: deque[Action] = deque()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), name="fake-openai",
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """Generation requests received (whatever the answer)."""
        with self._lock:
            return len(self.received)

    def script(self, kind: str, times: int = 1, **kw: Any) -> None:
        with self._lock:
            self._script.extend(Action(kind, **kw) for _ in range(times))

    def next_action(self) -> Action | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def record(self, body: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.received.append({"body": body, "headers": headers, "time": time.monotonic()})

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def _make_handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout)
            self.close_connection = True

    def _auth_error(self) -> tuple[int, dict[str, Any]] | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return 401, error_body("You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        key = auth[7:].strip()
        if key != self.fake.api_key:
            masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
            return 401, error_body(f"Incorrect API key provided: {masked}. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        return None

    # -- endpoints ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, error_body(f"Invalid URL (GET {self.path})"))
        self.fake.models_calls += 1
        if (err := self._auth_error()) is not None:
            return self._send(*err)
        data = [{"id": m, "object": "model", "created": 1698785189, "owned_by": "system"} for m in MODELS]
        self._send(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") == "/v1/chat/completions":
            return self._chat(raw)
        if self.path.rstrip("/") != "/v1/images/generations":
            return self._send(404, error_body(f"Invalid URL (POST {self.path})"))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self.fake.record(body, dict(self.headers))
        if (err := self._auth_error()) is not None:
            return self._send(*err)
        action = self.fake.next_action()
        if action is not None and self._scripted(action, body):
            return
        if (bad := validate(body)) is not None:
            return self._send(400, bad)
        self._send(200, success_body(body, self.fake.image_side))

    def _chat(self, raw: bytes) -> None:
        """Chat Completions with an image: the scripted failures, then ``fake.chat_answer``."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self.fake._lock:
            self.fake.chat_received.append({"body": body, "headers": dict(self.headers)})
        if (err := self._auth_error()) is not None:
            return self._send(*err)
        action = self.fake.next_action()
        if action is not None and self._scripted(action, body):
            return
        parts = (((body or {}).get("messages") or [{}])[0].get("content") or []) if isinstance(body, dict) else []
        urls = [p.get("image_url", {}).get("url", "") for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
        if not body or not body.get("model") or not urls or not all(u.startswith("data:image/") for u in urls):
            return self._send(400, error_body("expected a model and an image_url data URL", param="messages"))
        self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.fake.chat_answer}}]})

    def _scripted(self, action: Action, body: Any) -> bool:
        """Play a scripted failure; False when the request must then be answered normally."""
        if action.kind == "hang":
            self.fake.stopping.wait(action.seconds)
            return False
        if action.kind == "close":
            self.close_connection = True
            return True
        status, payload, headers = scripted_answer(action, body)
        self._send(status, payload, headers)
        return True


def scripted_answer(action: Action, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = dict(action.headers)
    if action.retry_after is not None:
        headers["Retry-After"] = action.retry_after
    if action.kind == "429":
        return 429, error_body("Rate limit reached for gpt-image-1 in organization org-test on images per "
                               "minute (IPM): Limit 5, Used 5, Requested 1.", "requests", None,
                               "rate_limit_exceeded"), headers
    if action.kind == "quota":
        return 429, error_body("You exceeded your current quota, please check your plan and billing details.",
                               "insufficient_quota", None, "insufficient_quota"), headers
    if action.kind == "500":
        return 500, error_body("The server had an error while processing your request. Sorry about that!",
                               "server_error"), headers
    if action.kind == "503":
        return 503, error_body("The engine is currently overloaded, please try again later.",
                               "server_error"), headers
    if action.kind == "policy":
        model = str((body or {}).get("model", "")) if isinstance(body, dict) else ""
        if model.startswith("dall-e"):
            return 400, error_body(POLICY_MESSAGE["dall-e"], code="content_policy_violation"), headers
        return 400, error_body(POLICY_MESSAGE["gpt-image"], "image_generation_user_error", None,
                               "moderation_blocked"), headers
    return action.status, action.body or error_body("scripted error"), headers


def validate(body: Any) -> dict[str, Any] | None:
    """The service's 400 answer for a bad request body, or None when it is acceptable."""
    if not isinstance(body, dict):
        return error_body("We could not parse the JSON body of your request. (HINT: This likely means you "
                          "aren't using your HTTP library correctly.)")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return error_body("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    model = body.get("model", "dall-e-2")
    if model not in MODELS:
        return error_body(f"Invalid value for 'model' = {model}.", param="model", code="invalid_value")
    sizes, qualities = MODELS[model]
    gpt = model.startswith("gpt-image")
    if gpt and "response_format" in body:
        return error_body("Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
    if body.get("response_format", "url") not in ("url", "b64_json"):
        return error_body("Invalid value for 'response_format'.", param="response_format", code="invalid_value")
    size = body.get("size", "1024x1024")
    if size not in sizes:
        allowed = ", ".join(f"'{s}'" for s in sorted(sizes))
        return error_body(f"Invalid value: '{size}'. Supported values are: {allowed}.", param="size",
                          code="invalid_value")
    if body.get("quality", "auto") not in qualities:
        return error_body(f"Invalid value: '{body['quality']}'.", param="quality", code="invalid_value")
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= (1 if model == "dall-e-3" else 10):
        return error_body("Invalid 'n': for 'dall-e-3', only n=1 is supported.", param="n", code="invalid_value")
    return None


def success_body(body: dict[str, Any], image_side: int | None) -> dict[str, Any]:
    model = body.get("model", "dall-e-2")
    size = body.get("size", "1024x1024")
    w, h = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
    if image_side is not None:
        w = h = image_side
    out: dict[str, Any] = {"created": int(time.time())}
    item: dict[str, Any] = {}
    if model.startswith("gpt-image"):
        item["b64_json"] = png_b64(w, h)
        out.update(background="opaque", output_format="png", size=size, quality="medium",
                   usage={"input_tokens": 50, "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                          "output_tokens": 1056, "total_tokens": 1106})
    elif body.get("response_format") == "b64_json":
        item["b64_json"] = png_b64(w, h)
    else:
        item["url"] = "https://oaidalleapiprodscus.blob.core.windows.net/private/img-test.png"
    if model == "dall-e-3":
        item["revised_prompt"] = f"A detailed, vivid illustration: {body['prompt']}, in rich colours."
    out["data"] = [item]
    for i in range(1, int(body.get("n", 1))):  # the service's n images differ from each other
        out["data"].append({**item, "b64_json": png_b64(w, h, i)} if "b64_json" in item else dict(item))
    return out
