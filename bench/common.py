"""Shared helpers for the CPU benchmarks: the real daemon as a subprocess, /proc readings, results.

Nothing here is imported by the daemon.  ``tests/support/harness.py`` is loaded by path (``DaemonProcess``:
the real ``python -m astrowatch run`` with a real ``NOTIFY_SOCKET``); ``BenchDaemon`` adds the arrival
time of every sd_notify datagram so READY=1 can be timed to the millisecond.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Results: bench/out, or ASTROWATCH_BENCH_OUT (make bench-smoke: build/bench-smoke).
OUT = Path(os.environ.get("ASTROWATCH_BENCH_OUT") or ROOT / "bench" / "out").resolve()
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# A deployed daemon (systemd) caches its bytecode; this sandbox sets PYTHONDONTWRITEBYTECODE=1,
# which would make every start recompile the astrowatch sources.  The daemons started by the
# benchmarks run without it (documented in bench/README.md); --help is measured both ways.
DONT_WRITE_BYTECODE = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("astrowatch_test_harness", ROOT / "tests" / "support" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


# -- the daemon ------------------------------------------------------------------------------------
class BenchDaemon(harness.DaemonProcess):
    """``DaemonProcess`` that remembers when each notify datagram arrived (monotonic clock)."""

    def __init__(self, config_path: Path, args: list[str] | None = None, prefix: list[str] | None = None) -> None:
        super().__init__(config_path, args=args, prefix=prefix)
        self.arrivals: list[tuple[float, str]] = []
        self.t_start: float | None = None  # monotonic, just before Popen
        self.t_start_wall: float | None = None  # time.time(), just before Popen

    def start(self, wait_ready: bool = True) -> BenchDaemon:
        self.t_start_wall = time.time()
        self.t_start = time.monotonic()
        super().start(wait_ready=False)
        if wait_ready:
            self.wait_arrival("READY=1")
        return self

    def drain_messages(self) -> list[str]:
        while self._receive(0.0):  # non-blocking: whatever is queued now
            pass
        return self.messages

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for one datagram and record its arrival time; False if none."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536).decode()
        except (TimeoutError, BlockingIOError):
            return False
        self.arrivals.append((time.monotonic(), data))
        self.messages.append(data)
        return True

    def pump(self, seconds: float) -> None:
        """Wait ``seconds`` while reading the notify socket, as systemd does.  (Before the notifier
        became non-blocking, a reader that stopped reading froze the daemon: found by this
        benchmark.)"""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._receive(min(left, 0.5))

    def wait_arrival(self, needle: str, timeout: float = 60.0) -> float:
        """Monotonic time at which the first datagram containing ``needle`` arrived.  Blocks in
        ``recv`` (not the harness's 50 ms polling), so the time is that of the arrival."""
        deadline = time.monotonic() + timeout
        while True:
            hit = next((t for t, m in self.arrivals if needle in m), None)
            if hit is not None:
                return hit
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {needle}:\n{self.log()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {needle}:\n{self.log()}")
            self._receive(min(left, 0.1))

    def close(self) -> None:
        super().close()
        import shutil

        shutil.rmtree(self._sockdir, ignore_errors=True)  # the harness leaves its socket folder

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


BENCH_CONFIG: dict[str, Any] = {  # the daemon's defaults, written out, with fake backends
    "data_dir": "data",
    "watch": {"stability_seconds": 2.0, "polling": False, "polling_interval": 2.0, "rescan_seconds": 300},
    "astro": {"backend": "fake"},
    "enhance": {"backend": "fake"},
    "log": {"level": "info", "format": "json"},
}


def write_bench_config(folder: Path, **sections: Any) -> Path:
    """A config with the daemon's defaults except what a benchmark sets (written out in full)."""
    return harness.write_config(folder, BENCH_CONFIG, **sections)


@contextlib.contextmanager
def scratch(name: str, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for one benchmark run, removed afterwards unless ``keep``."""
    tmp = Path(tempfile.mkdtemp(prefix=f"aw-bench-{name}-"))
    try:
        yield tmp
    finally:
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- /proc --------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) in MB (10^6 bytes), plus the thread count."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / 1e6
        elif key == "Threads":
            out[key] = int(value)
    return out


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# -- statistics ---------------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


# -- machine and results ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1e6, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "loadavg_when_saved": loadavg()}


def save(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None, **smoke: Any) -> argparse.Namespace:
    """``ap.parse_args`` plus ``--smoke``: the arguments named in ``smoke`` take those seconds-long
    values (``make bench-smoke``: the script runs end to end; its figures mean nothing)."""
    sizes = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in smoke.items())
    ap.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {sizes}")
    args = ap.parse_args(argv)
    if args.smoke:
        for name, value in smoke.items():
            setattr(args, name, value)
    return args


def tiny_sdxl_options(parser: argparse.ArgumentParser) -> None:
    """The options every tiny-SDXL script takes (``lora_switch.py``, ``variants.py``)."""
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")


def offline_torch(threads: int) -> None:
    """No hub access, ``threads`` intra-op threads, and the tests' model builders importable."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "tests" / "support"))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- a data folder whose files are all already ledgered ------------------------------------------------
def small_png(i: int) -> bytes:
    """A distinct 32x24 PNG per ``i`` (about 150 bytes)."""
    import io as _io

    from PIL import Image

    img = Image.new("RGB", (32, 24), ((i * 37) % 256, (i * 91) % 256, (i * 53 + 17) % 256))
    img.putpixel((0, 0), (i % 256, (i // 256) % 256, (i // 65536) % 256))
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def prepare_ledgered(folder: Path, files: int = 10_000, users: int = 200, **config: Any) -> dict[str, Any]:
    """``folder/config.yaml`` + ``folder/data`` with ``files`` inputs in ``users`` folders (one
    ``theme_<user>.json`` each, the rest small PNGs), every one already in the ledger.

    The ledger is filled by the daemon's own code: ``Ingest.handle`` on every file, in this process
    (no worker, the bench's own connection with ``PRAGMA synchronous=OFF`` to go fast), then every
    job is set to ``inbox`` in one UPDATE, as after a run whose results await review.  Unlike a
    real run the photos stay in the user folders (a processed photo moves to ``archive/``), so
    the watcher has 10,000 known files to look at.  Returns counts and timings.
    """
    t0 = time.monotonic()
    cfg_path = write_bench_config(folder, **config)
    data = folder / "data"
    per = files // users
    names = [f"user{u:03d}" for u in range(users)]
    k = 0
    for name in names:
        d = data / "Utilisateurs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / f"theme_{name}.json").write_bytes(harness.theme_bytes("astrowatch_minimal.json", user=name))
        for j in range(per - 1):
            (d / f"img_{j:04d}.png").write_bytes(small_png(k))
            k += 1
    t_files = time.monotonic() - t0

    from astrowatch.intake.ingest import Ingest
    from astrowatch.intake.watcher import scan
    from astrowatch.review.reviewer import Reviewer
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

    setup_logging("error", "json")
    cfg = load_config(cfg_path)
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ledger._conn().execute("PRAGMA synchronous=OFF")
    ingest = Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))
    outcomes: dict[str, int] = {}
    for path in scan(layout):
        what = ingest.handle(path)
        outcomes[what] = outcomes.get(what, 0) + 1
    conn = ledger._conn()
    conn.execute("UPDATE jobs SET state = 'inbox', attempts = 1")
    seen = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    return {"config": cfg_path, "data": data, "files": users * per, "users": users, "outcomes": outcomes,
            "seen_rows": seen, "jobs": jobs, "seconds_files": round(t_files, 1),
            "seconds_total": round(time.monotonic() - t0, 1)}
