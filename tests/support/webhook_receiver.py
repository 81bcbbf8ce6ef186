"""A loopback webhook receiver that verifies each message with the ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def write_secret(folder: Path, *secrets: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "webhook_secret"
    path.write_text("\n".join(secrets) + "\n")
    path.chmod(0o600)
    return path


class Receiver:
    """Records every verified message (headers and body); answers ``status`` (settable)."""

    def __init__(self, secret: str, *, status: int = 204, port: int = 0) -> None:
        from standardwebhooks import Webhook

        self.verifier = Webhook(secret)
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = receiver.verifier.verify(body, headers)
                except Exception as exc:
                    with receiver.lock:
                        receiver.rejected.append(str(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.append({"id": headers["webhook-id"], "payload": payload,
                                              "signature": headers["webhook-signature"], "status": receiver.status})
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/astrowatch"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ok(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if 200 <= r["status"] < 300]

    def types(self) -> list[str]:
        return [r["payload"]["type"] for r in self.ok()]
