"""LoRA adapters on the loaded SDXL pipelines: load once, keep resident, switch per job.

diffusers' adapter API on its peft backend: ``load_lora_weights(path, adapter_name=...)`` puts an
adapter into the base UNet and both text encoders; ``set_adapters(names, weights)`` picks which
ones run, at which weight, for the next image; ``disable_lora()`` runs the base model (its layers
then compute exactly the base weights' output); ``delete_adapters`` removes one adapter and
``unload_lora_weights`` the last peft layers, leaving the modules as loaded.

Switching between jobs is therefore a few attribute changes, no reload.  An adapter's name is
its display name plus its content hash, so a user's retrained file (same path, new content)
loads as a new adapter and the old one is deleted.  Per-user adapters beyond ``MAX_RESIDENT``
are evicted least recently used; configured (global) ones stay.

The refiner shares ``text_encoder_2`` with the base: an entry with ``refiner: true`` is also
loaded into the refiner's UNet, and before the refiner's prompt is encoded the shared encoder is
switched to the refiner's adapters only (base-only adapters off).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from astrowatch.backends.loras import USER, LoraPlan, LoraUse, plan_files
from astrowatch.core.errors import ConfigError, InputError

log = structlog.get_logger("astrowatch.backends.sdxl")

MAX_RESIDENT = 16  # per-user adapters kept loaded per worker (configured ones are never evicted)
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


@dataclass
class _Resident:
    use: LoraUse
    on_refiner: bool


def adapter_name(use: LoraUse) -> str:
    """A peft adapter name (no dots) unique per content: ``<name>_<12 hex of sha256>``."""
    return f"{_UNSAFE.sub('_', use.name)}_{(use.sha256 or '')[:12]}"


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers prints a per-key "LOAD REPORT" table when peft layers go into a text encoder."""
    import transformers.utils.logging as tlog

    previous = tlog.get_verbosity()
    tlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():  # peft: "Already found a peft_config" (a second adapter: intended)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        tlog.set_verbosity(previous)


class AdapterSet:
    """The adapters resident on one device's pipelines (used under the backend's lock)."""

    def __init__(self, base: Any, refiner: Any | None) -> None:
        self.base, self.refiner = base, refiner
        self.resident: OrderedDict[str, _Resident] = OrderedDict()
        self.active: list[str] = []
        # (names, weights) set on the base; ((), ()) = disabled; None = unknown, set it in full
        self._state: tuple[tuple[str, ...], tuple[float, ...]] | None = None
        self.loads = 0

    # -- loading -----------------------------------------------------------------------------
    def load_configured(self, entries: list[Any], data_dir: Path) -> None:
        """The configured LoRAs without ``{user}``, loaded before READY (a bad one: ConfigError)."""
        fixed = [e for e in entries if USER not in e.path]
        if fixed:
            self.ensure(plan_files(fixed, "", data_dir))

    def ensure(self, plan: LoraPlan) -> list[str]:
        """Load what the plan needs and is not resident; return the adapter names, in plan order."""
        names = []
        for use in plan.uses:
            name = adapter_name(use)
            if name in self.resident:
                self.resident.move_to_end(name)
            else:
                self._drop_stale(use)
                self._load(name, use)
            names.append(name)
        self._evict(keep=set(names))
        return names

    def _load(self, name: str, use: LoraUse) -> None:
        try:
            with _quiet_loading():
                self.base.load_lora_weights(str(use.path), adapter_name=name)
                if use.refiner and self.refiner is not None:
                    self.refiner.unet.load_lora_adapter(str(use.path), prefix="unet", adapter_name=name)
        except Exception as exc:
            self._forget(name)
            if type(exc).__name__ == "OutOfMemoryError":
                raise  # the backend's OOM handling, not a bad file
            raise self._error(use, exc) from None
        self.resident[name] = _Resident(use, bool(use.refiner and self.refiner is not None))
        self._state = None  # a new adapter is active after loading: set the next state in full
        self.loads += 1
        log.info("sdxl_lora_loaded", lora=use.name, adapter=name, path=str(use.path), resident=len(self.resident))

    def _error(self, use: LoraUse, exc: Exception) -> ConfigError | InputError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])
        why = " ".join(line.strip() for line in first[:2])[:300]
        other_base = type(exc).__name__ == "NoMatchingPeftModuleError" or "size mismatch" in str(exc)
        what = ("does not fit this SDXL model (a LoRA made for another base model, e.g. SD 1.5?)" if other_base
                else "cannot be loaded as a LoRA")
        where = " or its refiner" if use.refiner else ""
        message = f"LoRA {use.name!r} ({use.path}) {what}{where}: {why}"
        hint = "use a LoRA trained for SDXL"
        if use.per_user:
            return InputError(message, hint=hint + ", or remove the file")
        return ConfigError("sdxl.loras: " + message, hint=hint + ", or remove the entry from sdxl.loras")

    def _drop_stale(self, use: LoraUse) -> None:
        """A user's file replaced (same name, other content): delete the previous adapter."""
        prefix = f"{_UNSAFE.sub('_', use.name)}_"
        for name in [n for n, r in self.resident.items() if n.startswith(prefix) and r.use.path == use.path]:
            self.unload(name)

    def _evict(self, keep: set[str]) -> None:
        per_user = [n for n, r in self.resident.items() if r.use.per_user and n not in keep]
        while per_user and sum(r.use.per_user for r in self.resident.values()) > MAX_RESIDENT:
            self.unload(per_user.pop(0))

    def _forget(self, name: str) -> None:
        """After a failed load: remove whatever part of the adapter did get in."""
        for model in (self.base.unet, self.base.text_encoder, self.base.text_encoder_2,
                      self.refiner.unet if self.refiner is not None else None):
            if model is not None and name in (getattr(model, "peft_config", None) or {}):
                with contextlib.suppress(Exception), _quiet_loading():
                    self._delete(model, name)
        self._unload_if_empty()

    @staticmethod
    def _delete(model: Any, name: str) -> None:
        if hasattr(model, "delete_adapters"):
            model.delete_adapters([name])
        else:  # a transformers text encoder
            from diffusers.utils.peft_utils import delete_adapter_layers

            delete_adapter_layers(model, name)

    def unload(self, name: str) -> None:
        """Delete one adapter from every module (the others stay); the last one unloads peft."""
        entry = self.resident.pop(name, None)
        if entry is None:
            return
        self.base.delete_adapters([name])
        if entry.on_refiner and self.refiner is not None:
            self.refiner.unet.delete_adapters([name])
        self.active = [n for n in self.active if n != name]
        self._state = None
        self._unload_if_empty()
        log.info("sdxl_lora_unloaded", lora=entry.use.name, adapter=name, resident=len(self.resident))

    def _unload_if_empty(self) -> None:
        if self.resident:
            return
        self._state = None
        with contextlib.suppress(Exception):
            self.base.unload_lora_weights()
        if self.refiner is not None and getattr(self.refiner.unet, "peft_config", None):
            with contextlib.suppress(Exception):
                self.refiner.unet.unload_lora()
        self.active = []

    def unload_all(self) -> None:
        for name in list(self.resident):
            self.unload(name)

    # -- switching -----------------------------------------------------------------------------
    def activate(self, plan: LoraPlan | None) -> None:
        """Make the next base image use exactly the plan's adapters and weights (none: the base)."""
        names = self.ensure(plan) if plan is not None and plan.uses else []
        weights = tuple(u.weight for u in plan.uses) if plan is not None and names else ()
        state = (tuple(names), weights)
        if self.resident and state != self._state:
            if names and self._state in (None, ((), ())):
                self.base.enable_lora()
            if names:
                self.base.set_adapters(names, adapter_weights=list(state[1]))
            else:
                self.base.disable_lora()
            self._state = state
        self.active = names
        self._refiner_unet(plan)

    def _refiner_unet(self, plan: LoraPlan | None) -> None:
        if self.refiner is None or not getattr(self.refiner.unet, "peft_config", None):
            return
        chosen = self._refiner_choice(plan)
        if chosen:
            self.refiner.unet.enable_lora()
            self.refiner.unet.set_adapters([n for n, _ in chosen], weights=[w for _, w in chosen])
        else:
            self.refiner.unet.disable_lora()

    def _refiner_choice(self, plan: LoraPlan | None) -> list[tuple[str, float]]:
        if plan is None:
            return []
        return [(adapter_name(u), u.weight) for u in plan.uses
                if u.refiner and self.resident.get(adapter_name(u), _Resident(u, False)).on_refiner]

    def for_refiner(self, plan: LoraPlan | None) -> None:
        """Before the refiner's prompt is encoded: the shared ``text_encoder_2`` runs only the
        refiner's adapters (the next ``activate`` restores the base's)."""
        if not self.resident or self.refiner is None:
            return
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        chosen = self._refiner_choice(plan)
        encoder = self.base.text_encoder_2
        self._state = None  # the shared encoder no longer matches the base's state
        if chosen:
            enable_lora_for_text_encoder(encoder)
            set_adapters_for_text_encoder([n for n, _ in chosen], encoder, [w for _, w in chosen])
        else:
            disable_lora_for_text_encoder(encoder)
