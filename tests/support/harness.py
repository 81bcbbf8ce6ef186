"""Drive the real daemon as a subprocess, exactly as systemd and a reviewer would.

``DaemonProcess`` starts ``python -m astrowatch run`` with ``NOTIFY_SOCKET`` bound to a real
unix datagram socket, so tests see READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 as systemd does.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


TEST_CONFIG: dict[str, Any] = {  # fast stability, CPU backends, quick retries
    "data_dir": "data",
    "watch": {"stability_seconds": 0.3, "rescan_seconds": 2.0},
    "astro": {"backend": "wheel", "wheel_size": 256},
    "enhance": {"backend": "lanczos", "min_side": 16},
    "retries": {"max_attempts": 2, "backoff_seconds": 0.1},
    "log": {"level": "info", "format": "json"},
    # tests write kilobytes: the 500 MB default guard would park every job on a nearly full CI disk
    # (the guard itself is tested with its own thresholds on a small tmpfs)
    "limits": {"min_free_mb": 20},
}


def write_config(folder: Path, base: dict[str, Any] | None = None, **sections: Any) -> Path:
    """``base`` (default: TEST_CONFIG) with each section in ``sections`` merged over it."""
    merged = copy.deepcopy(TEST_CONFIG if base is None else base)
    for key, value in sections.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    path.chmod(0o640)  # the daemon refuses a config its group can write, whatever the umask
    return path


def make_image(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 60),
               fmt: str | None = None) -> bytes:
    from PIL import Image

    img = Image.new("RGB", size, color)
    img.paste((20, 40, 220), (0, 0, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, format=fmt or {"jpg": "JPEG", "jpeg": "JPEG"}.get(path.suffix[1:].lower(), path.suffix[1:].upper()))
    data = buf.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def theme_bytes(name: str = "astrowatch_minimal.json", user: str = "gaby") -> bytes:
    data = json.loads((FIXTURES / "themes" / name).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "user" in data:
        data["user"] = user
    return json.dumps(data).encode()


def corrected_theme_bytes(user: str = "gaby") -> bytes:
    """The same person's chart after the upstream app corrected the birth time: another moon and
    ascendant, another seed — a new render (a mere re-export of the same chart makes no job)."""
    data = json.loads(theme_bytes("astrowatch_minimal.json", user))
    data["birth"] = "1990-08-04T21:10:00+02:00"
    data["moon"] = {"sign": "Verseau", "degree": 2.5, "house": 3}
    data["ascendant"] = {"sign": "Poissons", "degree": 8.0}
    return json.dumps(data).encode()


def drop_theme(data: Path, user: str = "gaby", fixture: str = "astrowatch_minimal.json") -> Path:
    """What the upstream app does: ``Utilisateurs/<user>/theme_<user>.json``. Returns the user folder."""
    folder = data / "Utilisateurs" / user
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"theme_{user}.json").write_bytes(theme_bytes(fixture, user=user))
    return folder


class DaemonProcess:
    def __init__(self, config_path: Path, *, watchdog_usec: int | None = None, args: list[str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.prefix = prefix or []  # e.g. setpriv ... to run the daemon as another uid
        self.config_path = config_path
        self.data = config_path.parent / "data"
        self.watchdog_usec = watchdog_usec
        self.args = args or ["run"]
        self.proc: subprocess.Popen | None = None
        self.messages: list[str] = []
        self._sockdir = tempfile.mkdtemp(prefix="aw-notify-")
        self.sock_path = os.path.join(self._sockdir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.05)
        self.log_path = config_path.parent / f"daemon-{int(time.time() * 1000)}.log"

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        env = {**os.environ, "NOTIFY_SOCKET": self.sock_path, "PYTHONUNBUFFERED": "1"}
        env.pop("WATCHDOG_USEC", None)
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "astrowatch", *self.args,
                                      "--config", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.config_path.parent)
        if wait_ready:
            self.wait_message("READY=1", timeout=60)
        return self

    def drain_messages(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait_message(self, needle: str, timeout: float = 20.0) -> str:
        def found() -> str | None:
            self.drain_messages()
            if self.proc is not None and self.proc.poll() is not None and not any(needle in m for m in self.messages):
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {needle}:\n{self.log()}")
            return next((m for m in self.messages if needle in m), None)

        return wait_until(found, timeout, what=needle)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def inbox_images(data: Path, user: str = "gaby") -> list[Path]:
    return sorted((data / "inbox" / user).glob("*.png"))


def run_cli(*args: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "astrowatch", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
