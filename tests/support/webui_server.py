"""A fake but real AUTOMATIC1111/Forge WebUI API server, for tests, benchmarks and rehearsals.

It speaks HTTP/1.1 on 127.0.0.1 (keep-alive, like uvicorn), uses the WebUI's field names,
defaults and error shapes (see shared/reference/sd-webui-api.md and modules/api/api.py), resizes
with Pillow, and serialises every generation behind one global lock like the real server.

Fault knobs (attributes, or ``POST /_control`` with the same names as JSON keys):
``slow`` seconds per generation, ``drop`` the next N requests (read, count, close without an
answer), ``fail`` the next N requests with ``fail_status`` (a proxy-style text body),
``down_for`` seconds (stop listening, then come back on the same port), ``garble`` the next
200 answer of a generation endpoint: ``"json"`` (a cut-off JSON body) or ``"image"`` (valid JSON
whose images are base64 of bytes that are not an image), as a broken proxy or extension might.  ``GET /_control``
returns the counters.  Progress, interrupt and control requests are never faulted.

    python tests/support/webui_server.py --port 7861 [--auth user:pass] [--slow 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webui_fake_api import (
    DEFAULT_SAMPLERS,
    DEFAULT_UPSCALERS,
    SCHEMAS,
    ApiError,
    FakeApi,
    parse_body,
)

UNFAULTED = ("/sdapi/v1/progress", "/sdapi/v1/interrupt", "/_control")
GENERATION_PATHS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image")
PROXY_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], webui: FakeWebUI) -> None:
        self.webui = webui
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, OSError)):
            return  # the client went away (read timeout, interrupt...): not a server bug
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.webui.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        webui: FakeWebUI = self.server.webui  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if path == "/_control":
            self._send(200, webui.control(json.loads(raw or b"{}") if method == "POST" else {}))
            return
        webui.count(method, path)
        fault = webui.take_fault(path)
        if fault == "drop":
            self.close_connection = True  # received and counted, closed without an answer
            return
        if fault:
            self._send_text(fault, f"{fault} {PROXY_TEXT.get(fault, 'Error')}")
            return
        status, payload, headers = webui.respond(method, path, raw, self.headers.get("Authorization"))
        garble = webui.take_garble(path, status)
        if garble == "json":
            self._send_text(200, json.dumps(payload)[:40], content_type="application/json")
            return
        if garble == "image":
            payload = webui.not_an_image(payload)
        self._send(status, payload, headers)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeWebUI:
    """The server: start/stop/down/up, fault knobs, counters.  Endpoint logic lives in FakeApi."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", auth: str | None = None,
                 upscalers: tuple[str, ...] = DEFAULT_UPSCALERS,
                 samplers: tuple[str, ...] = DEFAULT_SAMPLERS,
                 interrogators: tuple[str, ...] = ("clip", "deepdanbooru"),
                 round_to_8: bool = True, verbose: bool = False, loras: tuple[str, ...] = ()) -> None:
        self.host, self.port, self.auth, self.verbose = host, port, auth, verbose
        self.api = FakeApi(upscalers=upscalers, samplers=samplers, interrogators=interrogators,
                           round_to_8=round_to_8, loras=loras)
        self.drop = 0
        self.fail = 0
        self.fail_status = 503
        self.garble: str | None = None  # "json" | "image": the next generation answer is broken
        self.posts: Counter[str] = Counter()  # POSTs received, per path (faulted ones included)
        self.gets: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()  # 200 answers, per path
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- knobs -----------------------------------------------------------------------------------
    @property
    def slow(self) -> float:
        return self.api.slow

    @slow.setter
    def slow(self, seconds: float) -> None:
        self.api.slow = float(seconds)

    @property
    def interrupts(self) -> int:
        return self.api.interrupts

    @property
    def requests_seen(self) -> list[dict[str, Any]]:
        """The JSON bodies of the generation POSTs that reached an endpoint, in order."""
        return self.api.bodies

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def count(self, method: str, path: str) -> None:
        with self._lock:
            (self.posts if method == "POST" else self.gets)[path] += 1

    def take_fault(self, path: str) -> str | int | None:
        if path in UNFAULTED:
            return None
        with self._lock:
            if self.drop > 0:
                self.drop -= 1
                return "drop"
            if self.fail > 0:
                self.fail -= 1
                return self.fail_status
        return None

    def take_garble(self, path: str, status: int) -> str | None:
        if status != 200 or path not in GENERATION_PATHS:
            return None
        with self._lock:
            garble, self.garble = self.garble, None
        return garble

    @staticmethod
    def not_an_image(payload: dict[str, Any]) -> dict[str, Any]:
        junk = base64.b64encode(b"<html>502 Bad Gateway</html>").decode()
        payload = dict(payload)
        if "images" in payload:
            payload["images"] = [junk for _ in payload["images"]]
        if "image" in payload:
            payload["image"] = junk
        return payload

    def respond(self, method: str, path: str, raw: bytes,
                authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        denied = self.api.check_auth(self.auth, authorization)
        if denied is not None:
            return 401, denied, {"WWW-Authenticate": "Basic"}
        route: Callable[..., Any] | None = self.api.route(method, path)
        if route is None:
            known = self.api.route("POST" if method == "GET" else "GET", path) is not None
            return (405, {"detail": "Method Not Allowed"}, {}) if known else (404, {"detail": "Not Found"}, {})
        try:
            payload = route(parse_body(path, raw)) if path in SCHEMAS else route()
        except ApiError as exc:
            return exc.status, exc.body, {}
        except Exception as exc:
            return 500, {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)}, {}
        with self._lock:
            self.completed[path] += 1
        return 200, payload, {}

    def control(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("drop", "fail", "fail_status"):
            if key in body:
                setattr(self, key, int(body[key]))
        if "garble" in body:
            self.garble = body["garble"]
        if "slow" in body:
            self.slow = float(body["slow"])
        if body.get("reset"):
            self.reset_counts()
        if body.get("down_for"):  # after this answer has gone out (going down closes open connections)
            threading.Timer(0.05, self.down_for, args=(float(body["down_for"]),)).start()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"posts": dict(self.posts), "gets": dict(self.gets), "completed": dict(self.completed),
                    "interrupts": self.api.interrupts, "slow": self.slow, "drop": self.drop,
                    "fail": self.fail, "fail_status": self.fail_status, "job_count": self.api.job_count}

    def reset_counts(self) -> None:
        with self._lock:
            self.posts.clear()
            self.gets.clear()
            self.completed.clear()
            self.api.bodies.clear()
            self.api.interrupts = 0

    def post_count(self, endpoint: str) -> int:
        path = endpoint if endpoint.startswith("/") else f"/sdapi/v1/{endpoint}"
        return self.posts[path]

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeWebUI:
        self.up()
        return self

    def up(self) -> None:
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self.port), self)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-webui-{self.port}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening and cut open connections (new connections are refused)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def down_for(self, seconds: float) -> None:
        self.down()
        time.sleep(seconds)
        self.up()

    stop = down

    def __enter__(self) -> FakeWebUI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.api.release()
        self.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake AUTOMATIC1111 WebUI API server (--api)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--auth", default=None, help="user:pass, like --api-auth")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds per generation")
    parser.add_argument("--no-round-to-8", action="store_true", help="exact sizes, not //8*8")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--lora", action="append", default=[], help="a LoRA name the WebUI lists (repeatable)")
    args = parser.parse_args(argv)
    server = FakeWebUI(args.port, host=args.host, auth=args.auth, round_to_8=not args.no_round_to_8,
                       verbose=args.verbose, loras=tuple(args.lora))
    server.slow = args.slow
    server.start()
    print(f"fake WebUI listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
