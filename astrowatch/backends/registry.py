"""The registry: which class implements each backend name, and ``auto``'s choice on this machine.

Backend modules are imported on first use only (:func:`backend_class`), so the CLI and the daemon
core never load a model library they do not run.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from astrowatch.core.errors import ConfigError
from astrowatch.core.jobs import BackendName, JobKind

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import Backend
    from astrowatch.core.config import Config

# name -> "module:Class"; modules are imported on first use only.
REGISTRY: dict[str, str] = {
    BackendName.WHEEL: "astrowatch.backends.wheel.backend:WheelBackend",
    BackendName.LANCZOS: "astrowatch.backends.lanczos:LanczosBackend",
    BackendName.FAKE: "astrowatch.backends.fake:FakeBackend",
    BackendName.SDXL: "astrowatch.backends.sdxl.backend:SdxlBackend",
    BackendName.SDAPI: "astrowatch.backends.sdapi.backend:SdapiBackend",
    BackendName.OPENAI: "astrowatch.backends.openai.backend:OpenAIBackend",
}


def backend_class(name: str) -> type[Backend]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "sdxl" if name == BackendName.SDXL else "all"
        raise ConfigError(
            f"backend {name!r} cannot be loaded: {exc}", hint=f"pip install 'astrowatch[{extra}]'"
        ) from None
    cls: type[Backend] = getattr(module, cls_name)
    return cls


def create_backend(name: str, kind: str, config: Config, *, device: str | None = None) -> Backend:
    """Instantiate a backend; ``device`` goes to backends that own a device (one per worker)."""
    cls = backend_class(name)
    if kind not in cls.kinds:
        raise ConfigError(f"{kind}.backend: {name!r} cannot do {kind} jobs")
    if device is not None and "device" in inspect.signature(cls.__init__).parameters:
        takes_device: Callable[..., Backend] = cls  # the signature was just checked
        return takes_device(config, device=device)
    return cls(config)


def _resolve_remote_auto(kind: str, config: Config) -> tuple[str, str]:
    """``auto`` when the model runs on workers (``executor: celery``): the coordinator cannot probe
    their GPUs."""
    if config.sdxl.model:
        return BackendName.SDXL.value, "executor: celery and sdxl.model is set: the workers run SDXL"
    name = BackendName.WHEEL if kind == JobKind.ASTRO else BackendName.LANCZOS
    return name.value, f"executor: celery and no sdxl.model: the workers run {name}"


def resolve_auto(kind: str, config: Config) -> tuple[str, str]:
    """Pick the best available backend for ``kind``; returns (name, why).  The name is a plain
    string (a :class:`BackendName` value), as the config gives it, for logs and the state file."""
    if getattr(config, "executor", "local") == "celery":
        return _resolve_remote_auto(kind, config)
    if kind == JobKind.ASTRO:
        if config.sdxl.model:
            if importlib.util.find_spec("diffusers") is not None:
                return BackendName.SDXL.value, "sdxl.model is set and diffusers is installed"
        if _sdapi_reachable(config):
            return BackendName.SDAPI.value, f"a WebUI answers at {config.sdapi.url}"
        return BackendName.WHEEL.value, "no model configured and no WebUI reachable: rendering the chart wheel"
    if _sdapi_reachable(config):
        return BackendName.SDAPI.value, f"a WebUI answers at {config.sdapi.url}"
    if config.sdxl.model and importlib.util.find_spec("diffusers") is not None:
        return BackendName.SDXL.value, "sdxl.model is set and diffusers is installed"
    return BackendName.LANCZOS.value, "no WebUI reachable and no model configured: Pillow Lanczos upscale"


def _sdapi_reachable(config: Config) -> bool:
    """A quick TCP connect to the WebUI's host:port (no HTTP, no dependency)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(config.sdapi.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
