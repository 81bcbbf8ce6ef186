"""Run ``astrowatch api`` as a real uvicorn process on a loopback port, driven with ``requests``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from harness import wait_until

TOKEN = "test-token-0123456789-abcdefghij"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiProcess:
    def __init__(self, config_path: Path, *, token: str | None = TOKEN, port: int | None = None) -> None:
        self.config_path = config_path
        self.token = token
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = config_path.parent / f"api-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def start(self) -> ApiProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ASTROWATCH_API_TOKEN", None)
        env.pop("CREDENTIALS_DIRECTORY", None)
        if self.token:
            env["ASTROWATCH_API_TOKEN"] = self.token
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astrowatch", "api", "--config", str(self.config_path), "--port", str(self.port),
             "--log-format", "json"], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=self.config_path.parent)
        wait_until(self._answers, timeout=60, what=f"astrowatch api on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"astrowatch api exited ({self.proc.returncode}):\n{self.log()}")
        try:
            requests.get(self.base + "/healthz", timeout=2)
            return True
        except requests.ConnectionError:
            return False

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.http.post(self.base + path, timeout=30, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.http.close()
        if hasattr(self, "_log"):
            self._log.close()


def wait_state(api: ApiProcess, path: str, states: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """Poll a JSON resource until its ``state`` is one of ``states``."""
    def reached() -> dict[str, Any] | None:
        body = api.get(path).json()
        return body if body.get("state") in states else None

    return wait_until(reached, timeout, interval=0.05, what=f"{path} in {sorted(states)}")


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (a WebUI that is down)."""
    return f"http://127.0.0.1:{free_port()}"
