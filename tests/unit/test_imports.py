"""The package's import graph: one-way (no cycles among astrowatch modules), and every
third-party module the core imports is a declared core dependency of pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "astrowatch"
# Modules of the optional extras: they may import what their extra declares.
OPTIONAL = {
    "sdxl": ("astrowatch.backends.sdxl.backend", "astrowatch.backends.sdxl.load", "astrowatch.backends.sdxl.run",
             "astrowatch.backends.sdxl.prompt", "astrowatch.backends.sdxl.lora",
             # exact CLIP token counts with a local model's tokenizer, guarded by has_transformers()
             "astrowatch.fusion.tokens", "astrowatch.fusion.clipwords",
             "astrowatch.backends.caption.local"),  # BLIP / Florence-2: torch + transformers
    "caption": ("astrowatch.backends.caption.wd14",),  # onnxruntime
    "ui": ("astrowatch.ui.page", "astrowatch.commands.ui"),
    "plot": ("astrowatch.commands.stats", "astrowatch.review.stats"),
    "api": ("astrowatch.api.app", "astrowatch.api.metrics", "astrowatch.api.events", "astrowatch.api.uploads",
            "astrowatch.api.openapi",
            "astrowatch.commands.api"),
    "celery": ("astrowatch.backends.remote.celery_app", "astrowatch.backends.remote.client", "astrowatch.runtime.remote_worker"),
    "provenance": ("astrowatch.storage.provenance",),  # c2pa, imported inside the signing functions only
}
IMPORT_NAME = {"PIL": "pillow", "c2pa": "c2pa-python", "yaml": "pyyaml", "pillow_heif": "pillow-heif",
               "prometheus_client": "prometheus-client", "python_multipart": "python-multipart",
               "sse_starlette": "sse-starlette"}  # import name -> distribution name


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import in the file: top level, in functions and under
    TYPE_CHECKING alike (a lazy import is still an edge of the design)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names]))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in imports_of(name, path):
            for cand in [target] + [f"{target}.{n}" for n in names]:
                if cand in mods and cand != name:
                    edges[name].add(cand)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_has_the_known_one_way_edges():
    edges = graph()
    assert "astrowatch.pipeline.publish" in edges["astrowatch.intake.ingest"]
    assert "astrowatch.storage.safefs" in edges["astrowatch.pipeline.delivery"]
    assert "astrowatch.core.tunables" in edges["astrowatch.core.config"]


def test_no_import_cycles_among_astrowatch_modules():
    found = cycles(graph())
    assert found == [], "import cycles (make them one-way; shared helpers go in astrowatch/storage/files.py): " + \
        "; ".join(" <-> ".join(c) for c in found)


def test_the_shared_helpers_import_nothing_from_astrowatch():
    for name in ("astrowatch.storage.files", "astrowatch.core.tunables"):
        assert graph()[name] == set(), name


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_third_party_import_of_the_core_is_a_declared_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_dist(r) for r in project["dependencies"]}
    extras = {k: {_dist(r) for r in v} for k, v in project["optional-dependencies"].items()}
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for name, path in modules().items():
        allowed = set(core)
        for extra, mods in OPTIONAL.items():
            if name in mods:
                allowed |= extras[extra]
        for target, _ in imports_of(name, path):
            top = target.split(".")[0]
            if not top or top == "astrowatch" or top in stdlib:
                continue
            if IMPORT_NAME.get(top, top).lower() not in allowed:
                missing.append(f"{name} imports {top}")
    assert missing == [], "undeclared core imports (add to [project] dependencies): " + ", ".join(missing)
