"""A real ``redis-server`` on a loopback port and real ``astrowatch worker`` processes, for the
``executor: celery`` tests.  Each worker runs from its own folder with its own config and no
access to the coordinator's data folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from harness import wait_until, write_config

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                else None)
try:
    import celery  # noqa: F401
    import redis as _redis_py  # noqa: F401
    _CELERY = True
except ImportError:
    _CELERY = False
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or not _CELERY,
    reason="redis-server is not installed (Debian package redis-server; `make test` installs it when run as "
           "root)" if REDIS_SERVER is None else "the celery extra is not installed (pip install 'astrowatch[celery]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, *, aof: bool = False, password: str | None = None, user: str | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aw-redis-"))
        self.aof, self.password, self.user = aof, password, user
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir),
               "--maxmemory-policy", "noeviction", "--appendonly", "yes" if self.aof else "no",
               "--appendfsync", "always", "--logfile", str(self.dir / "redis.log")]
        if self.password and self.user:  # an ACL user; the default user is switched off
            cmd += ["--user", "default", "off", "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
        elif self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, what="redis PING")
        return self

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, username=self.user, password=self.password,
                           socket_connect_timeout=1)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # redis writes the AOF and exits
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def celery_section(redis: RedisServer, **over: Any) -> dict[str, Any]:
    section = {"broker_url": redis.url, "visibility_timeout": 6, "poll_interval": 0.1, "max_in_flight": 4}
    section.update(over)
    return section


class WorkerProcess:
    """``astrowatch worker`` started from its own folder (its own config, no data folder)."""

    def __init__(self, root: Path, name: str, redis: RedisServer, *, delay: float = 0.0,
                 celery: dict[str, Any] | None = None, **sections: Any) -> None:
        self.folder = root / f"worker-{name}"
        self.name = f"{name}@test"
        cfg = {"astro": {"backend": "fake"}, "enhance": {"backend": "fake"}, "fake": {"delay_seconds": delay},
               "celery": celery or celery_section(redis), **sections}
        self.config = write_config(self.folder, **cfg)
        self.log_path = self.folder / "worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> WorkerProcess:
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "astrowatch", "worker", "--name", self.name,
                                      "--config", str(self.config)], cwd=self.folder, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        if wait:
            wait_until(lambda: "ready to take jobs" in self.log() or self._dead(), 60, what=f"worker {self.name} ready")
            assert self.proc.poll() is None, self.log()
        return self

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        if hasattr(self, "_log"):
            self._log.close()


def wait_gone(proc: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc.poll()
