"""LoRA adapters: which ones a job uses, their hashes, and how they are written down.

``sdxl.loras`` / ``sdapi.loras`` list adapters; a ``{user}`` in a path (or WebUI name) makes an
entry per user, applied only when that user's file exists and skipped (said in the sidecar) when
not.  A job's ``loras`` parameter (a redo) replaces the list: ``[{"name", "weight"}]`` entries
re-weight or keep configured adapters, a ``path`` adds one, a configured name left out removes it.

No torch here: the plan is made by the pipeline before prompt fusion (trigger words take their
share of the token budget) and handed to the backend, which loads and switches adapters.

Hashes, as A1111 writes them: ``sha256`` is the whole file's; ``short_hash`` is the first 12 hex
digits of the sha256 of the tensor data after the safetensors header (kohya's "addnet" hash,
``modules/hashes.addnet_hash_safetensors`` + ``network.NetworkOnDisk.set_hash``), which is what
PNG Info and civitai read in ``Lora hashes: "name: 0123456789ab"``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrowatch.core.errors import ConfigError, InputError

USER = "{user}"
SHORT_HASH = 12  # A1111: NetworkOnDisk.shorthash = hash[0:12]
MAX_HEADER = 100_000_000
LORA_MARKERS = ("lora_a", "lora_b", "lora_down", "lora_up", "lora.down", "lora.up", "lora_linear_layer")
OVERRIDE_KEYS = frozenset({"name", "weight", "path"})
_BLOCK = 1 << 20


class LoraFileError(ValueError):
    """A LoRA file is unusable; the caller decides whether that is a config or an input error."""


@dataclass(frozen=True)
class LoraUse:
    """One adapter applied to one job."""

    name: str
    weight: float
    path: Path | None = None  # None for a WebUI LoRA (the file is on the WebUI's side)
    sha256: str | None = None
    short_hash: str | None = None
    refiner: bool = False
    trigger: str = ""
    per_user: bool = False

    def tag(self) -> str:
        return f"<lora:{self.name}:{self.weight:g}>"


@dataclass
class LoraPlan:
    uses: list[LoraUse] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def triggers(self) -> list[str]:
        """Trigger words of the adapters in effect (a weight-0 adapter is off: no trigger either)."""
        return [u.trigger for u in self.uses if u.trigger and u.weight != 0]

    def tags(self) -> str:
        return " ".join(u.tag() for u in self.uses)

    def prompt_with_tags(self, prompt: str) -> str:
        """A1111 keeps ``<lora:name:weight>`` in the prompt text (it strips them before encoding)."""
        return f"{prompt} {self.tags()}".strip() if self.uses else prompt

    def hashes_field(self) -> str | None:
        """The value of A1111's ``Lora hashes`` infotext parameter."""
        pairs = [f"{_alias(u.name)}: {u.short_hash}" for u in self.uses if u.short_hash]
        return ", ".join(pairs) or None

    def params(self) -> list[dict[str, Any]]:
        """What the reviewer sees (and may edit for a redo) under ``params.loras``."""
        return [{"name": u.name, "weight": u.weight} for u in self.uses]

    def record(self, data_dir: Path | None = None) -> dict[str, Any]:
        """The sidecar's ``loras``: every adapter with its weight and hashes, and what was skipped."""
        used = [{"name": u.name, "weight": u.weight, "sha256": u.sha256, "hash": u.short_hash,
                 "path": _shown(u.path, data_dir), "refiner": u.refiner, "trigger": u.trigger or None}
                for u in self.uses]
        return {"applied": used, "skipped": list(self.skipped)}

    def key(self) -> list[tuple[str, float, str | None]]:
        """For result cache keys: which adapters, at which weight, with which content."""
        return [(u.name, u.weight, u.sha256) for u in self.uses]


def _alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")  # A1111: remove_symbols


def _shown(path: Path | None, data_dir: Path | None) -> str | None:
    if path is None:
        return None
    if data_dir is not None and path.is_relative_to(data_dir):
        return str(path.relative_to(data_dir))
    return str(path)


# -- files and hashes ------------------------------------------------------------------------
_hash_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
_hash_lock = threading.Lock()


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256 of the file, A1111 short hash); checks it is a safetensors LoRA (LoraFileError).

    Cached by (path, size, mtime): a file replaced under the same name is hashed again.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise LoraFileError(f"{path}: cannot read it ({exc.strerror})") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    whole, data = hashlib.sha256(), hashlib.sha256()
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 1 < length <= min(MAX_HEADER, st.st_size - 8):
            raise LoraFileError(f"{path}: not a .safetensors file (bad header length)")
        header_bytes = f.read(length)
        _check_header(path, header_bytes)
        whole.update(head + header_bytes)
        for chunk in iter(lambda: f.read(_BLOCK), b""):
            whole.update(chunk)
            data.update(chunk)
    result = (whole.hexdigest(), data.hexdigest()[:SHORT_HASH])
    with _hash_lock:
        _hash_cache[key] = result
    return result


def _check_header(path: Path, raw: bytes) -> None:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LoraFileError(f"{path}: not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{path}: not a .safetensors file (its header is not a mapping)")
    names = [k.lower() for k in header if k != "__metadata__"]
    if not names:
        raise LoraFileError(f"{path}: holds no tensors")
    if not any(marker in name for name in names for marker in LORA_MARKERS):
        raise LoraFileError(f"{path}: holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors; "
                            f"a full checkpoint or an embedding?)")


# -- planning ------------------------------------------------------------------------------------
def fill_user(text: str, user: str) -> str:
    return text.replace(USER, user)


def _weight(value: Any, name: str) -> float:
    if isinstance(value, bool):
        value = "true"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"job parameters: loras: the weight of {name!r} is {value!r}, not a number",
                         hint="write a number such as 0.8") from None
    if not -10.0 <= number <= 10.0:
        raise InputError(f"job parameters: loras: the weight of {name!r} ({number:g}) is not in [-10, 10]")
    return number


def _override_items(override: Any) -> list[dict[str, Any]]:
    if not isinstance(override, list) or not all(isinstance(i, dict) for i in override):
        raise InputError("job parameters: loras: expected a list of {\"name\", \"weight\"} objects "
                         "(add \"path\" for a LoRA that is not in the config)")
    for item in override:
        unknown = set(item) - OVERRIDE_KEYS
        if unknown:
            raise InputError(f"job parameters: loras: unknown key(s) {sorted(unknown)} (allowed: name, weight, path)")
        if not item.get("name") and not item.get("path"):
            raise InputError("job parameters: loras: every entry needs a name or a path")
    return override


@dataclass
class _Candidate:
    name: str
    weight: float
    path: Path
    refiner: bool
    trigger: str
    per_user: bool  # {user} in the path, or added by the job: problems are the job's, not the config's


def _resolve(path_text: str, user: str, data_dir: Path, *, confine: bool) -> Path:
    path = Path(fill_user(path_text, user)).expanduser()
    path = path if path.is_absolute() else data_dir / path
    if confine and not path.resolve().is_relative_to(data_dir.resolve()):
        raise InputError(f"LoRA path {path_text!r} leads outside the data folder", hint=f"keep it under {data_dir}")
    return path


def _configured(entries: list[Any], user: str, data_dir: Path) -> list[_Candidate]:
    out = []
    for e in entries:
        per_user = USER in e.path
        path = _resolve(e.path, user, data_dir, confine=per_user)
        name = fill_user(e.name, user) if e.name else path.stem
        out.append(_Candidate(name, e.weight, path, e.refiner, fill_user(e.trigger, user), per_user))
    return out


def _apply_override(configured: list[_Candidate], override: Any, user: str, data_dir: Path) -> list[_Candidate]:
    by_name = {c.name: c for c in configured}
    out = []
    for item in _override_items(override):
        label = str(item.get("name") or item.get("path"))
        weight = _weight(item.get("weight", 1.0), label)
        if item.get("path"):
            text = str(item["path"])
            if not text.lower().endswith(".safetensors"):
                raise InputError(f"job parameters: loras: {text!r} is not a .safetensors file")
            path = _resolve(text, user, data_dir, confine=True)
            if not path.is_file():
                raise InputError(f"job parameters: loras: {_shown(path, data_dir)} does not exist",
                                 hint="paths are relative to the data folder")
            name = str(item.get("name") or path.stem)
            out.append(_Candidate(name, weight, path, False, "", True))
        elif label in by_name:
            c = by_name[label]
            out.append(_Candidate(c.name, weight, c.path, c.refiner, c.trigger, c.per_user))
        else:
            known = ", ".join(sorted(by_name)) or "none"
            raise InputError(f"job parameters: loras: no LoRA named {label!r} for this user (configured: {known})",
                             hint="add a \"path\" to the entry, or use a configured name")
    return out


def plan_files(entries: list[Any], user: str, data_dir: Path, override: Any = None) -> LoraPlan:
    """The local (diffusers) plan: files resolved, checked and hashed.

    A missing ``{user}`` file is skipped; a missing global file is a ConfigError; an unusable
    file is a ConfigError when global, an InputError when per user or added by the job.
    """
    candidates = _configured(entries, user, data_dir)
    if override is not None:
        candidates = _apply_override(candidates, override, user, data_dir)
    plan = LoraPlan()
    for c in candidates:
        if not c.path.is_file():
            if c.per_user:
                plan.skipped.append({"name": c.name, "path": _shown(c.path, data_dir) or "", "reason": "no such file"})
                continue
            raise ConfigError(f"sdxl.loras: {c.path} does not exist",
                              hint="fix the path (relative paths are under data_dir) or remove the entry")
        try:
            sha, short = file_hashes(c.path)
        except LoraFileError as exc:
            raise lora_error(exc, per_user=c.per_user) from None
        plan.uses.append(LoraUse(c.name, c.weight, c.path, sha, short, c.refiner, c.trigger, c.per_user))
    return plan


def lora_error(exc: Exception, *, per_user: bool) -> ConfigError | InputError:
    hint = "use a LoRA .safetensors trained for SDXL (diffusers, kohya or peft format)"
    if per_user:
        return InputError(f"LoRA {exc}", hint=hint + ", or remove the file")
    return ConfigError(f"sdxl.loras: {exc}", hint=hint + ", or remove the entry")


def plan_names(entries: list[Any], user: str, available: set[str], override: Any = None) -> LoraPlan:
    """The WebUI plan: names the WebUI lists (``/sdapi/v1/loras``); a missing ``{user}`` one is skipped."""
    plan = LoraPlan()
    configured = [(fill_user(e.name, user), e.weight, fill_user(e.trigger, user), USER in e.name) for e in entries]
    if override is not None:
        by_name = {c[0]: c for c in configured}
        chosen = []
        for item in _override_items(override):
            name = str(item.get("name") or Path(str(item["path"])).stem)
            if name not in by_name and name not in available:
                listed = ", ".join(sorted(available)[:20]) or "none"
                raise InputError(f"job parameters: loras: the WebUI has no LoRA named {name!r} (it lists: {listed})")
            base = by_name.get(name, (name, 1.0, "", False))
            chosen.append((name, _weight(item.get("weight", base[1]), name), base[2], base[3]))
        configured = chosen
    for name, weight, trigger, per_user in configured:
        if name not in available:
            if per_user:
                plan.skipped.append({"name": name, "reason": "the WebUI lists no LoRA of that name"})
                continue
            raise ConfigError(f"sdapi.loras: the WebUI has no LoRA named {name!r}",
                              hint="see /sdapi/v1/loras, or remove the entry")
        plan.uses.append(LoraUse(name, weight, trigger=trigger, per_user=per_user))
    return plan


def user_files_newer(entries: list[Any], user: str, data_dir: Path, since: float) -> list[Path]:
    """The per-user (``{user}``) LoRA files of ``entries`` written after ``since``: a theme rewritten
    with the same chart after the person's LoRA was (re)trained is a new render, not a duplicate."""
    out = []
    for e in entries:
        if USER not in e.path:
            continue
        try:
            path = _resolve(e.path, user, data_dir, confine=True)
            if path.stat().st_mtime > since:
                out.append(path)
        except (OSError, InputError):
            continue  # missing or outside the data folder: the job's plan says so when it runs
    return out
