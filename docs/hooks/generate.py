"""mkdocs hooks: the pages that must not drift from the code are generated at build time.

- ``<!-- generated: job-states -->``: the job state diagram, from ``astrowatch.core.jobs.TRANSITIONS``;
- ``<!-- generated: config-reference -->``: every config section and key with its type, default and
  description, from the pydantic models in ``astrowatch/core/config.py`` and the comments of
  ``config.yaml`` (the commented template) and of ``config.py``;
- ``<!-- generated: http-routes -->`` and the file ``openapi.json``: from ``create_app`` in
  ``astrowatch/api/app.py`` (when FastAPI is installed);
- ``<!-- generated: photo-types -->``: the accepted photo types, from ``astrowatch/core/formats.py``;
- ``changelog.md``: ``CHANGELOG.md`` at the repository root.

Nothing is fetched: everything comes from this checkout.  A config key with no description
anywhere is a warning, so ``mkdocs build --strict`` fails until it is documented.
"""

from __future__ import annotations

import ast
import io
import json
import re
import sys
import tokenize
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = get_plugin_logger("generate")
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")

# Keys that neither config.yaml nor config.py comment: described here (kept short; a new key
# without any description makes the strict build fail until it is added somewhere).
EXTRA = {
    "astro.wheel_size": "side in pixels of the chart wheel (the `wheel` backend and the init image)",
    "enhance.scale_factor": "upscale factor (lowered to respect `max_output_side`)",
    "enhance.prompt": "img2img prompt when `denoising_strength` > 0",
    "enhance.negative_prompt": "img2img negative prompt when `denoising_strength` > 0",
    "enhance.steps": "img2img steps (WebUI \"SD upscale\")",
    "enhance.cfg_scale": "img2img CFG scale",
    "enhance.sampler_name": "img2img sampler (WebUI name)",
    "enhance.tile_size": "tile size of the WebUI \"SD upscale\" script",
    "enhance.tile_overlap": "tile overlap of the \"SD upscale\" script (smaller than `tile_size`)",
    "enhance.background": "colour that replaces transparency (photos are flattened before enhancing)",
    "enhance.unsharp_percent": "strength of the mild unsharp mask of the `lanczos` backend",
    "retries.backoff_seconds": "first wait before a job's next attempt (doubles each time)",
    "retries.backoff_max_seconds": "longest wait between attempts",
    "limits.max_json_bytes": "largest theme JSON accepted (hostile-input limit)",
    "limits.max_json_depth": "deepest JSON nesting accepted",
    "limits.max_image_bytes": "largest photo file accepted",
    "limits.max_image_pixels": "largest photo accepted, in pixels (decompression bombs refused from the header)",
    "fake.delay_seconds": "time each image takes",
    "fake.size": "side of the images it makes",
    "sdxl.steps": "denoising steps",
    "sdxl.cfg_scale": "classifier-free guidance scale",
    "sdxl.width": "image width (a multiple of 8 in 64..4096)",
    "sdxl.height": "image height (a multiple of 8 in 64..4096)",
    "sdxl.refiner_switch": "fraction of the steps run by the base model before the refiner takes over",
    "sdxl.cpu_offload": "offload the model to the CPU between uses (less GPU memory, slower)",
    "sdapi.url": "the WebUI's address",
    "sdapi.connect_timeout": "seconds to connect",
    "sdapi.steps": "astro txt2img steps",
    "sdapi.cfg_scale": "astro txt2img CFG scale",
    "sdapi.width": "astro image width",
    "sdapi.height": "astro image height",
    "sdapi.hires_fix": "the WebUI's hires fix for astro images",
    "openai.size": "image size as the Images API spells it",
    "openai.quality": "image quality as the Images API spells it",
    "openai.timeout": "seconds per request (a timed-out request is never re-sent: no double billing)",
    "dataset.class_tokens": "`class_tokens` of `dataset.toml` (kohya); empty: the trigger word, else the user",
    "dataset.repeats": "`num_repeats` of `dataset.toml`",
    "dataset.resolution": "`resolution` of `dataset.toml`",
    "feedback.learn": "take learned defaults for new jobs (see [Reviewing](reviewing.md#feedback-and-learned-defaults))",
    "fake.raise_error": "raise this kind of error on every attempt (a job's `params` may override it)",
    "sdxl.loras[].weight": "adapter weight (0 gives the base model's image, bit for bit)",
    "sdapi.scheduler": "astro txt2img scheduler (WebUI name)",
    "sdapi.retry_backoff_max": "longest in-request retry wait",
    "openai.api_key_file": "file holding the key (else `$OPENAI_API_KEY` or `$CREDENTIALS_DIRECTORY/openai_api_key`)",
    "openai.retry_backoff_max": "longest wait before a retry",
    "retention.check_seconds": "how often the daemon applies retention (only when idle)",
    "log.level": "`debug`, `info`, `warning` or `error`",
    "api.host": "address `astrowatch api` listens on (not loopback: a token is required)",
    "api.port": "port of `astrowatch api`",
    "celery.queue": "Celery queue name",
    "celery.poll_interval": "seconds between the coordinator's result polls",
    "sdxl.loras[].path": "a local `.safetensors`; relative paths are under `data_dir`; `{user}` makes it per user",
    "sdapi.loras[].weight": "adapter weight",
    "sdapi.loras[].trigger": "words put first in the prompt when applied",
}


# -- hooks -------------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    changelog = ROOT / "CHANGELOG.md"
    if changelog.is_file():
        text = changelog.read_text(encoding="utf-8")
        # links inside the changelog point at repository files: show them as code, not links
        text = re.sub(r"\[([^\]]+)\]\((?!https?:|#)[^)]+\)", r"\1", text)
        files.append(File.generated(config, "changelog.md", content=text))
    schema = _openapi()
    if schema is not None:
        files.append(File.generated(config, "openapi.json", content=json.dumps(schema, indent=2) + "\n"))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        maker = GENERATORS.get(name)
        if maker is None:
            log.warning("%s: unknown generated block %r", page.file.src_uri, name)
            return match.group(0)
        return maker()

    return MARKER.sub(fill, markdown)


# -- job states --------------------------------------------------------------------------------
def job_states() -> str:
    from astrowatch.core.jobs import INTENTS, PENDING, TERMINAL, TRANSITIONS, JobState

    lines = ["```mermaid", "stateDiagram-v2", "    direction LR", "    [*] --> queued"]
    for state, targets in TRANSITIONS.items():
        for target in sorted(targets, key=list(TRANSITIONS).index):
            lines.append(f"    {state.value} --> {target.value}")
    for state in TRANSITIONS:
        if state in TERMINAL:
            lines.append(f"    {state.value} --> [*]")
    lines.append("```")
    doc = {s: _plain(_enum_comment(JobState, s.name)) for s in TRANSITIONS}
    table = ["", "| state | may move to | kind of state | note |", "|---|---|---|---|"]
    for state, targets in TRANSITIONS.items():
        kind = ("intent" if state in INTENTS else "pending" if state in PENDING
                else "terminal" if state in TERMINAL else "")
        moves = ", ".join(f"`{t.value}`" for t in sorted(targets, key=list(TRANSITIONS).index)) or "—"
        table.append(f"| `{state.value}` | {moves} | {kind} | {doc[state]} |")
    return "\n".join(lines + table) + "\n"


def _enum_comment(enum: type[Enum], member: str) -> str:
    """The trailing comment of ``MEMBER = "value"  # comment`` in the enum's source."""
    import inspect

    source = inspect.getsource(enum)
    found = re.search(rf"^\s*{member} = [^#\n]*#\s*(.*)$", source, re.M)
    return found.group(1).strip() if found else ""


# -- configuration -----------------------------------------------------------------------------
def config_reference() -> str:
    from astrowatch.core.config import Config

    yaml_notes = _yaml_comments(ROOT / "config.yaml")
    py_notes = _py_comments(ROOT / "astrowatch" / "core" / "config.py")
    out: list[str] = []
    top: list[tuple[str, Any]] = []
    sections: list[tuple[str, Any]] = []
    for name, field in Config.model_fields.items():
        if field.exclude:
            continue
        (sections if _model_of(field.annotation) is not None and not _is_list(field.annotation) else top).append(
            (name, field))
    out.append("### Top level\n")
    out += _table([(name, field, f"{name}", py_notes.get(("Config", name))) for name, field in top], yaml_notes)
    for name, field in sections:
        model = _model_of(field.annotation)
        out.append(f"\n### `{name}`\n")
        if model.__doc__ and model.__doc__.strip() != "Section":
            out.append(_oneline(model.__doc__).replace("``", "`") + "\n")
        if yaml_notes.get(name):
            out.append(f"*config.yaml:* {_plain(yaml_notes[name])}\n")
        rows = [(key, sub, f"{name}.{key}", py_notes.get((model.__name__, key))) for key, sub in model.model_fields.items()]
        out += _table(rows, yaml_notes)
        for key, sub in model.model_fields.items():
            item = _model_of(sub.annotation)
            if item is not None and not _is_list(sub.annotation):  # a nested section, e.g. provenance.c2pa
                out.append(f"\n#### `{name}.{key}`\n")
                if item.__doc__:
                    out.append(_oneline(item.__doc__).replace("``", "`") + "\n")
                rows = [(k, f, f"{name}.{key}.{k}", py_notes.get((item.__name__, k))) for k, f in item.model_fields.items()]
                out += _table(rows, yaml_notes)
            if item is not None and _is_list(sub.annotation):
                out.append(f"\n#### `{name}.{key}[]` entries\n")
                if item.__doc__:
                    out.append(_oneline(item.__doc__).replace("``", "`") + "\n")
                rows = [(k, f, f"{name}.{key}[].{k}", py_notes.get((item.__name__, k))) for k, f in item.model_fields.items()]
                out += _table(rows, yaml_notes)
    return "\n".join(out) + "\n"


def _table(rows: list[tuple[str, Any, str, str | None]], yaml_notes: dict[str, str]) -> list[str]:
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, field, path, py_note in rows:
        note = _plain(yaml_notes.get(path) or py_note or field.description or "") or EXTRA.get(path, "")
        if not note:
            log.warning("config key %s has no description (comment it in config.yaml or config.py, "
                        "or add it to EXTRA in docs/hooks/generate.py)", path)
        bounds = _bounds(field)
        kind = _type(field.annotation) + (f" ({bounds})" if bounds else "")
        out.append(f"| `{key}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(note)} |")
    return out


def _plain(text: str) -> str:
    """A comment from the sources is plain text: keep ``<user>`` and ``*.jsonl`` literal in Markdown."""
    text = re.sub(r'README "([^"]+)"', r'"\1" in these docs', text)  # config.yaml predates the site
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace("*", "\\*").replace("_", "\\_")
    return "`".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _oneline(doc: str) -> str:
    return " ".join(doc.split())


def _model_of(annotation: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(_is_list(a) for a in typing.get_args(annotation))


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" | `null`" if type(None) in args else "")
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping {_type(args[0])} → {_type(args[1])}"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        from pydantic import BaseModel

        if issubclass(annotation, BaseModel):
            return "entry"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                "Path": "path", "PosixPath": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _bounds(field: Any) -> str:
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for meta in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value:,}".replace(",", " ") if isinstance(value, int) else f"{symbol} {value}")
    return ", ".join(parts)


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" or value != value.strip() else f"`{value}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def _yaml_comments(path: Path) -> dict[str, str]:
    """``section.key`` (or ``key``) -> the trailing comment of that line in the commented template,
    commented-out keys included; a comment-only line under it continues it."""
    notes: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: str | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        cont = re.match(r"^#? {20,}#\s*(.*)$", raw)
        if cont and last and last in notes:
            notes[last] += " " + cont.group(1).strip()
            continue
        line = raw
        commented = re.match(r"^( *)# ?(.*)$", raw)
        if commented:
            line = commented.group(1) + commented.group(2)
        match = KEY_LINE.match(line)
        if not match:
            last = None
            continue
        indent, key, rest = len(match["indent"]), match["key"], match["rest"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        keypath = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        parts = re.split(r"\s#\s?", rest, maxsplit=1)
        comment = parts[1] if len(parts) > 1 else ""
        last = keypath if comment.strip() else None
        if comment.strip() and keypath not in notes:
            notes[keypath] = comment.strip()
    return notes


def _py_comments(path: Path) -> dict[tuple[str, str], str]:
    """(class, field) -> the trailing comment of the field's line in config.py."""
    source = path.read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    notes: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
                        text = comments.get(line, "")
                        if text and not text.startswith("type:"):
                            notes[(node.name, stmt.target.id)] = text
    return notes


# -- HTTP API ----------------------------------------------------------------------------------
_SCHEMA: dict[str, Any] | None = None


def _openapi() -> dict[str, Any] | None:
    global _SCHEMA
    if _SCHEMA is None:
        try:
            from astrowatch.api.app import create_app
            from astrowatch.core.config import Config
        except ImportError as exc:  # the api extra is not installed: the page says so
            log.info("openapi.json not generated: %s", exc)
            return None
        _SCHEMA = create_app(Config(), None).openapi()
    return _SCHEMA


def http_routes() -> str:
    schema = _openapi()
    if schema is None:
        return ("*The route table and `openapi.json` are generated when the `api` extra (FastAPI) is "
                "installed where the site is built.*\n")
    out = [f"The schema of this build: [openapi.json](openapi.json) (OpenAPI {schema.get('openapi')}, "
           f"API version {schema['info']['version']}). A running `astrowatch api` serves the same at "
           "`/openapi.json`, browsable at `/docs`.", "", "| method | path | summary |", "|---|---|---|"]
    for route, methods in schema["paths"].items():
        for method, op in methods.items():
            out.append(f"| `{method.upper()}` | `{route}` | {_cell(op.get('summary', ''))} |")
    return "\n".join(out) + "\n"


# -- photo types -------------------------------------------------------------------------------
def photo_types() -> str:
    from astrowatch.core.formats import ACCEPTED

    out = ["| type | extensions | notes |", "|---|---|---|"]
    for t in ACCEPTED:
        note = getattr(t, "note", "") or ""
        out.append(f"| {t.label} | {' '.join(f'`{e}`' for e in t.extensions)} | {_cell(note)} |")
    return "\n".join(out) + "\n"


GENERATORS = {
    "job-states": job_states,
    "config-reference": config_reference,
    "http-routes": http_routes,
    "photo-types": photo_types,
}
