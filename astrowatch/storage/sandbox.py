"""Run work on an untrusted file in a child process with a memory limit and a time limit.

A decoder bug or a memory bomb in a dropped photo must fail that photo, never the daemon.  So the
parent opens the file itself (:mod:`astrowatch.storage.safefs`), hands the child the open
descriptor (``pass_fds``; the child is ``sys.executable -m <module>``, started by
``posix_spawn``/``fork_exec`` without ``preexec_fn``: safe from a threaded daemon), and the child:

1. sets ``RLIMIT_AS`` to ``memory_mb`` before anything else is done,
2. reads the descriptor (at most ``max_bytes``), hashes what it read and refuses it when the
   hash is not the one the parent expects (the file changed since it was queued),
3. runs the work on those bytes and writes one JSON header line, then the raw payload, to stdout.

The parent kills a child still running after ``timeout_s``.  A child that ran out of memory, died
of a signal (a decoder crash) or timed out raises :class:`InputError` naming the file and why.

Protocol: stdin carries one JSON request (``fd``, ``memory_mb``, ``max_bytes``, ``sha256``, ``name``
and the work's own keys); stdout ``{"ok": true, "payload_bytes": n, "sha256": ..., ...}\\n`` then
``n`` bytes, or ``{"ok": false, "error": "...", "memory": bool}\\n``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astrowatch.core.errors import BackendError, InputError

Work = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]

# fewer threads, fewer arenas: less address space reserved by the libraries themselves
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
_MEMORY_WORDS = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")


def _package_root() -> str:
    import astrowatch

    return str(Path(astrowatch.__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    env = {**os.environ, **_CHILD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
    return env


def _log(event: str, **fields: Any) -> None:
    """Parent side only: the child never imports structlog (it starts ~70 ms faster)."""
    import structlog

    structlog.get_logger("astrowatch.sandbox").warning(event, **fields)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_child(module: str, request: dict[str, Any], *, fd: int, name: str, memory_mb: int, timeout_s: float,
              max_bytes: int, sha256: str | None = None, what: str = "decoder") -> tuple[dict[str, Any], memoryview]:
    """Run ``python -m module`` on open descriptor ``fd``; returns ``(header, payload)``.

    ``name`` is the file's name for messages; ``sha256`` (optional) what its content must hash to.
    Raises :class:`InputError` for anything the file did to the child (its own refusal, memory,
    crash, timeout); :class:`BackendError` (retried) when the child cannot even be started."""
    body = json.dumps({**request, "fd": fd, "memory_mb": memory_mb, "max_bytes": max_bytes, "sha256": sha256,
                       "name": name}).encode()
    try:
        proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(fd,), close_fds=True, env=_child_env())
    except OSError as exc:
        raise BackendError(f"{name}: cannot start the {what} process: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(body, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise InputError(f"{name}: the {what} took longer than {timeout_s:g} s and was stopped "
                         "(limits.decode_timeout_seconds)") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return _parse(out, err, proc.returncode, name=name, memory_mb=memory_mb, what=what)


def _parse(out: bytes, err: bytes, rc: int, *, name: str, memory_mb: int,
           what: str) -> tuple[dict[str, Any], memoryview]:
    end = out.find(b"\n")
    header: dict[str, Any] = {}
    if end >= 0:
        try:
            parsed = json.loads(out[:end])
        except ValueError:
            parsed = None
        header = parsed if isinstance(parsed, dict) else {}
    stderr = err.decode("utf-8", "replace").strip()
    out_of_memory = f"{name}: the {what} ran out of its {memory_mb} MB memory limit (limits.decode_memory_mb)"
    if header.get("ok") is False:
        raise InputError(out_of_memory if header.get("memory") else str(header.get("error") or f"{name}: refused"))
    if rc < 0:
        sig = _signal_name(-rc)
        hint = " (killed from outside, perhaps by the system's out-of-memory killer)" if -rc == signal.SIGKILL else ""
        _log(f"{what} child died", file=name, signal=sig, stderr=stderr[-2000:])
        raise InputError(f"{name}: the {what} crashed with signal {sig}{hint}")
    if rc != 0 or header.get("ok") is not True:
        if any(word in stderr for word in _MEMORY_WORDS):
            raise InputError(out_of_memory)
        _log(f"{what} child failed", file=name, exit_code=rc, stderr=stderr[-4000:])
        last = stderr.splitlines()[-1] if stderr else "no message"
        raise InputError(f"{name}: the {what} failed (exit code {rc}: {last[:300]})")
    payload = memoryview(out)[end + 1:]
    if len(payload) != header.get("payload_bytes"):
        raise InputError(f"{name}: the {what} sent {len(payload)} bytes, not the {header.get('payload_bytes')} announced")
    return header, payload


# -- the child side -------------------------------------------------------------------------------
def child_main(work: Work) -> int:
    """The child's whole life: limit, read, hash, check, work, reply (see module doc)."""
    request = json.loads(sys.stdin.buffer.read())
    limit = int(request["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout.buffer
    try:
        header, payload = _child_work(work, request)
    except InputError as exc:
        out.write(json.dumps({"ok": False, "error": str(exc)}).encode() + b"\n")
    except MemoryError:
        out.write(b'{"ok": false, "memory": true}\n')
    else:
        out.write(json.dumps({**header, "ok": True, "payload_bytes": len(payload)}).encode() + b"\n")
        out.write(payload)
    out.flush()
    return 0


def _child_work(work: Work, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    name, max_bytes = str(request["name"]), int(request["max_bytes"])
    with os.fdopen(int(request["fd"]), "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{name}: grew past the {max_bytes}-byte limit while read")
    sha = hashlib.sha256(data).hexdigest()
    if request.get("sha256") and sha != request["sha256"]:
        raise InputError(f"{name}: the file changed since it was queued (its content is not the one the job "
                         "was made for); drop it again to make a new job")
    header, payload = work(request, data)
    return {**header, "sha256": sha}, payload
