"""The states are named with :class:`astrowatch.core.jobs.JobState` members, not spelled as string
literals all over the package: at most a handful of literals remain (a dict key of an output
format, a folder name that happens to equal a state...)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import astrowatch
from astrowatch.core.jobs import JobState

PACKAGE = Path(astrowatch.__file__).parent
LIMIT = 30
STATE_VALUES = frozenset(s.value for s in JobState)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def state_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, value)`` of every string constant in ``path`` (not a docstring) that equals a state."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = _docstrings(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value in STATE_VALUES and id(node) not in docs)


def count_by_file() -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel == "astrowatch/core/jobs.py":  # where the values are defined
            continue
        if n := len(state_literals(path)):
            counts[rel] = n
    return counts


def test_the_counter_sees_literals_but_not_docstrings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""queued"""\n\ndef f(job):\n    """inbox"""\n    return job.state == "inbox" or "x" == "failed"\n')
    assert state_literals(sample) == [(5, "failed"), (5, "inbox")]


def test_at_most_a_few_job_state_literals_in_the_package():
    counts = count_by_file()
    total = sum(counts.values())
    detail = "\n".join(f"{n:4d} {f}" for f, n in counts.most_common())
    assert total <= LIMIT, f"{total} job-state string literals (at most {LIMIT}); name them with JobState:\n{detail}"
