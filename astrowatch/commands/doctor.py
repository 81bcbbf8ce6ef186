"""``astrowatch doctor``: config, folders and permissions, inotify limits, backends reachable."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from astrowatch.core.jobs import BackendName, JobKind

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

OK, WARN, FAIL = "ok", "warn", "FAIL"


def _check(results: list[tuple[str, str, str]], name: str, fn: Callable[[], tuple[str, str]]) -> None:
    try:
        status, detail = fn()
    except Exception as exc:
        status, detail = FAIL, str(exc)
    results.append((status, name, detail))


def _folders(config: Config) -> tuple[str, str]:
    from astrowatch.storage.layout import FOLDERS

    missing, readonly = [], []
    for folder in FOLDERS:
        path = Path(config.data_dir) / folder
        if not path.is_dir():
            missing.append(f"{folder}/")
        elif not os.access(path, os.W_OK | os.X_OK):
            readonly.append(f"{folder}/")
    problems = []
    if missing:
        problems.append(f"missing under {config.data_dir}: {', '.join(missing)} (run 'astrowatch init')")
    if readonly:
        problems.append(f"not writable by uid {os.getuid()}: {', '.join(readonly)} "
                        "(run the service as the folder's owner or group, with a setgid data folder)")
    if problems:
        return FAIL, "; ".join(problems)
    free = shutil.disk_usage(config.data_dir).free / 2**30
    return (OK if free > 2 else WARN), f"all folders writable under {config.data_dir}; {free:.1f} GiB free"


def _group(config: Config) -> tuple[str, str]:
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.sharing import group_members, group_name, group_problems

    gid, problems = group_problems(Layout(config.data_dir))
    if problems:  # a failure when people share the group; a one-user install shares nothing, and works
        members = group_members(gid)
        who = f" (members: {', '.join(members)})" if members else ""
        return (FAIL if members else WARN), f"group {group_name(gid)}{who}: " + "; ".join(problems)
    return OK, (f"group {group_name(gid)} can create user folders, move results into approved/, "
                "read the inbox and the ledger")


def _private_files(config: Config) -> tuple[str, str]:
    """What ``astrowatch run`` checks before it starts: the config and every secret file it would
    read owned by the service user (the data folder's owner) or root, writable by nobody else."""
    from astrowatch.core.secrets import private_problem
    from astrowatch.runtime.settings import CONFIG_MODE

    try:
        service_uid = Path(config.data_dir).stat().st_uid
    except OSError:
        service_uid = os.geteuid()
    files: list[tuple[Path, str, int]] = []
    if config.source is not None:
        files.append((config.source, "the config", CONFIG_MODE))
    token_file = config.api.token_file
    if token_file is not None and not token_file.is_absolute() and config.source is not None:
        token_file = config.source.parent / token_file
    for path, what in ((config.openai.api_key_file, "openai.api_key_file"), (token_file, "api.token_file"),
                       (config.celery.password_file, "celery.password_file"),
                       (config.sdapi.auth_file, "sdapi.auth_file")):
        if path is not None:
            files.append((path, what, 0o600))
    problems, checked = [], []
    for path, what, fix_mode in files:
        try:
            st = path.stat()
        except OSError as exc:
            problems.append(f"{what}: cannot check {path}: {exc.strerror}")
            continue
        problem = private_problem(path, st, what, fix_mode=fix_mode, euid=service_uid)
        if problem is not None:
            problems.append(str(problem))
        else:
            checked.append(what)
    if problems:
        return FAIL, "; ".join(problems) + " -- astrowatch run refuses to start until fixed"
    return OK, f"{', '.join(checked) or 'nothing'} owned by the service user or root, writable by nobody else"


def _url_passwords(config: Config) -> tuple[str, str]:
    """A Redis password written in ``celery.broker_url``/``result_backend`` is read by whoever can
    read the config: the documented install lets the service's group read it (0640)."""
    import stat

    from astrowatch.storage.sharing import group_name

    if not config.celery.has_url_password():
        return OK, "no password in the config's URLs (celery.password_file or a systemd credential holds it)"
    if config.source is None:
        return WARN, "celery.broker_url/result_backend hold a password; prefer celery.password_file"
    try:
        st = config.source.stat()
        service_uid = Path(config.data_dir).stat().st_uid
    except OSError as exc:
        return WARN, f"celery URLs hold a password and {config.source} cannot be checked: {exc.strerror}"
    readers = []
    if st.st_mode & stat.S_IRGRP:
        readers.append(f"group {group_name(st.st_gid)}")
    if st.st_mode & stat.S_IROTH:
        readers.append("everyone")
    if st.st_uid not in (service_uid, 0) and st.st_mode & stat.S_IRUSR:
        readers.append(f"uid {st.st_uid}")
    fix = (f"move it to celery.password_file (a 0600 file owned by the service user) or "
           f"chmod 600 {config.source}")
    if readers:
        return WARN, (f"{config.source} holds the Redis password (celery URLs) and is readable by "
                      f"{' and '.join(readers)} (mode {stat.S_IMODE(st.st_mode):04o}): {fix}")
    return OK, (f"celery URLs hold a password; {config.source} is readable by the service user only "
                "(celery.password_file is still the recommendation)")


def _inotify(config: Config) -> tuple[str, str]:
    if config.watch.polling:
        return OK, f"polling every {config.watch.polling_interval} s (inotify not used)"
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except OSError:
        return WARN, "cannot read fs.inotify.max_user_watches (not Linux?): consider watch.polling: true"
    dirs = sum(1 for _ in os.walk(Path(config.data_dir) / "Utilisateurs")) + 3
    status = OK if dirs * 4 < limit else WARN
    return status, (f"{dirs} folders to watch, limit {limit}"
                    + ("" if status == OK else "; raise it: sudo sysctl fs.inotify.max_user_watches=524288"))


def _image_types() -> tuple[str, str]:
    """The accepted photo types (from :mod:`astrowatch.core.formats`) and whether HEIC/AVIF decode here."""
    from astrowatch.core.formats import accepted_text, avif_support, heif_support

    heif, avif = heif_support(), avif_support()
    missing = [what for what, ok in (("HEIC/HEIF (pip install pillow-heif)", heif),
                                     ("AVIF (Pillow built without libavif)", avif)) if not ok]
    support = f"HEIC/HEIF support: {'pillow-heif ' + heif if heif else 'NOT available'}; " \
              f"AVIF support: {'Pillow built-in' if avif else 'NOT available'}"
    detail = f"accepted: {accepted_text()}; {support}"
    return (WARN, f"{detail}; such files will fail until fixed: {', '.join(missing)}") if missing else (OK, detail)


def _backend(config: Config, kind: JobKind) -> tuple[str, str]:
    from astrowatch.backends.registry import create_backend, resolve_auto
    from astrowatch.core.errors import BackendUnavailable

    name = getattr(config, kind).backend
    why = ""
    if name == BackendName.AUTO:
        name, why = resolve_auto(kind, config)
        why = f" (auto: {why})"
    backend = create_backend(name, kind, config)
    try:
        backend.start()
        backend.health()
    except BackendUnavailable as exc:
        return WARN, f"{name}{why}: unavailable now, jobs will wait: {exc}"
    finally:
        backend.close()
    return OK, f"{name}{why} ready"


def _marking(config: Config) -> tuple[str, str]:
    """What marks generated images carry (``provenance``): a bad C2PA key or certificate fails here
    as it would stop the daemon."""
    from astrowatch.pipeline.marking import Marker

    marker = Marker(config.provenance)
    return (WARN if not config.provenance.mark else OK), marker.describe()


def _captions(config: Config) -> tuple[str, str]:
    """What line 1 of a dataset caption will hold, and whether the model folders are complete."""
    import importlib.util

    from astrowatch.backends.caption.folders import check_caption_models, folder_problem
    from astrowatch.backends.caption.text import resolve_captioner
    from astrowatch.backends.registry import resolve_auto

    c = config.caption
    backend = config.enhance.backend
    if backend == BackendName.AUTO:
        backend, _why = resolve_auto(JobKind.ENHANCE, config)
    captioner, why = resolve_captioner(config, backend)
    warnings = []
    if "caption_model" in config.enhance.model_fields_set:
        warnings.append("enhance.caption_model is the old key: set caption.captioner_model (clip or deepdanbooru)")
    problems = [p for p in (folder_problem(captioner, c.captioner_model) if captioner in ("blip", "florence2")
                            else None, folder_problem("wd14", c.tagger_model) if c.tagger == "wd14" else None) if p]
    if problems:
        check_caption_models(config)  # raises, naming the folder and the missing file
        return FAIL, "; ".join(problems)
    if c.tagger == "wd14" and importlib.util.find_spec("onnxruntime") is None:
        return FAIL, "caption.tagger wd14 needs onnxruntime: pip install 'astrowatch[caption]'"
    parts = [f"captioner {captioner}" + (f" ({why})" if why else ""), f"tagger {c.tagger}"]
    if captioner == "none" and c.tagger == "none":
        warnings.append("no captioner and no tagger: line 1 of a dataset caption will hold only the trigger "
                        "word" + ("" if config.dataset.trigger_word else " (none set: the technical line)"))
    elif captioner == "none":
        warnings.append("no captioner: captions will hold only the trigger word and the tags")
    detail = ", ".join(parts) + ("; " + "; ".join(warnings) if warnings else "")
    return (WARN if warnings else OK), detail


def _ip_adapter(config: Config) -> tuple[str, str]:
    """``sdxl.ip_adapter``: whether the folder is complete (weights + image encoder), and, with
    ``sdapi.ip_adapter``, whether the WebUI's ControlNet extension offers that module and model."""
    from astrowatch.backends.sdxl.folders import ip_adapter_paths, ip_adapter_problems

    ip = config.sdxl.ip_adapter
    if ip.model is None:
        return OK, ("not configured: a user's moodboard is the img2img start (sdxl.init_strength), "
                    "not a style reference")
    problems = ip_adapter_problems(ip)
    if problems:
        return FAIL, "sdxl.ip_adapter.model: " + "; ".join(problems)
    weights, encoder = ip_adapter_paths(ip)
    return OK, f"complete: {weights} and {encoder}/ (scale {ip.scale:g}, fallback {ip.fallback})"


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.settings import load_config

    results: list[tuple[str, str, str]] = []
    config = None
    try:
        config = load_config(args.config)
        results.append((OK, "config", f"{config.source} is valid"))
    except Exception as exc:
        results.append((FAIL, "config", str(exc)))
    if config is not None:
        _check(results, "config and secret files", lambda: _private_files(config))
        _check(results, "passwords in the config", lambda: _url_passwords(config))
        _check(results, "folders", lambda: _folders(config))
        _check(results, "shared with the group", lambda: _group(config))
        _check(results, "inotify", lambda: _inotify(config))
        _check(results, "photo types", _image_types)
        _check(results, "generated images marked", lambda: _marking(config))
        for kind in JobKind:
            _check(results, f"{kind} backend", functools.partial(_backend, config, kind))
        _check(results, "captions", functools.partial(_captions, config))
        _check(results, "IP-Adapter (moodboard as style reference)", functools.partial(_ip_adapter, config))
    from astrowatch.core.secrets import redact

    for status, name, detail in results:
        print(redact(f"[{status:>4}] {name}: {detail}"))  # an error's text may quote a URL: no secret, ever
    return 1 if any(s == FAIL for s, _, _ in results) else 0
