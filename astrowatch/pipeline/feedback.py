"""Learned defaults: reviewers' decisions choose the parameters of new jobs.

``feedback.candidates`` maps ``<kind>.<param>`` (``enhance.denoising_strength``, ``astro.style``)
to the values worth trying.  Evidence comes from ``logs/reviews.jsonl`` (one record per job, the
last decision wins): a decision counts for the value the result was made with (its recorded
``params``); an approval is a success, a rejection or a redo a failure.  A redo that changed the
parameter also votes for the value it asked for (one more success for that value).

Each candidate's score is its Beta(1, 1) posterior mean ``(approved + 1) / (decisions + 2)``.
The config default (``<kind>.<param>`` in the config when it is one of the candidates, else the
first candidate) stays until another candidate with at least ``feedback.min_decisions`` decisions
scores higher.  With probability ``feedback.explore`` a job tries another candidate instead; the
draw is seeded from the job's source sha256, so the same input always gets the same choice.

What was chosen and why is stored in the job's params (``_learned``; keys starting with ``_`` are
never passed to backends) and copied into the sidecar as ``learned``.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.core.jobs import Decision, JobKind
from astrowatch.core.tunables import norm as _norm
from astrowatch.storage.jsonlog import read_jsonl_all, rotated_files

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

log = structlog.get_logger("astrowatch.feedback")
KINDS = tuple(JobKind)
DECISIONS = frozenset(Decision)  # a reviews.jsonl record with another "decision" is not ours
LEARNED_KEY = "_learned"
_cache: dict[Path, tuple[int, int, list[dict[str, Any]]]] = {}
_cache_lock = threading.Lock()


def split_key(key: str) -> tuple[str, str]:
    kind, _, param = key.partition(".")
    return kind, param


# -- evidence -----------------------------------------------------------------------------------
def read_decisions(path: Path, *, root: Path | None = None) -> list[dict[str, Any]]:
    """``reviews.jsonl`` records, one per job (the last decision wins), in file order.  Torn or
    foreign lines are skipped.  Cached while the files' sizes and mtimes do not change."""
    files = rotated_files(path, root=root)  # with the rotated ones (retention.log_max_mb)
    if not files:
        return []
    try:
        stats = [p.stat() for p in files]
        size, mtime = sum(st.st_size for st in stats), max(st.st_mtime_ns for st in stats)
    except OSError:  # rotated between the listing and the stat: read, do not cache
        size = mtime = -1
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == size and hit[1] == mtime:
            return hit[2]
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl_all(path, root=root):
        job_id = record.get("job_id")
        if isinstance(job_id, str) and record.get("decision") in DECISIONS:
            latest.pop(job_id, None)  # re-insert: the order is that of the last decision
            latest[job_id] = record
    records = list(latest.values())
    if size >= 0:
        with _cache_lock:
            _cache[path] = (size, mtime, records)
    return records


@dataclass
class Tally:
    decisions: int = 0
    approved: int = 0
    votes: int = 0  # redo requests for this value (counted in decisions and approved too)

    @property
    def score(self) -> float:
        """Posterior mean of the approval rate under a Beta(1, 1) prior."""
        return (self.approved + 1) / (self.decisions + 2)

    def as_dict(self) -> dict[str, Any]:
        rate = self.approved / self.decisions if self.decisions else None
        return {"decisions": self.decisions, "approved": self.approved, "redo_votes": self.votes,
                "approval_rate": None if rate is None else round(rate, 3), "score": round(self.score, 3)}


def same(a: Any, b: Any) -> bool:
    return bool(_norm(a) == _norm(b))


def _index(value: Any, candidates: list[Any]) -> int | None:
    key = _norm(value)
    return next((i for i, c in enumerate(candidates) if _norm(c) == key), None)


def tally(records: Iterable[dict[str, Any]], key: str, candidates: list[Any]) -> list[Tally]:
    """One :class:`Tally` per candidate of ``key`` from decision records."""
    kind, param = split_key(key)
    tallies = [Tally() for _ in candidates]
    for record in records:
        params = record.get("params")
        if record.get("kind") != kind or not isinstance(params, dict) or param not in params:
            continue  # the result was not made with this parameter: no evidence
        i = _index(params[param], candidates)
        if i is not None:
            tallies[i].decisions += 1
            tallies[i].approved += record.get("decision") == Decision.APPROVE
        overrides = record.get("overrides")
        if record.get("decision") == Decision.REDO and isinstance(overrides, dict) and param in overrides \
                and not same(overrides[param], params[param]):
            j = _index(overrides[param], candidates)
            if j is not None:  # a redo asking for X is a vote for X
                tallies[j].decisions += 1
                tallies[j].approved += 1
                tallies[j].votes += 1
    return tallies


# -- choosing ---------------------------------------------------------------------------------
@dataclass
class Choice:
    key: str
    candidates: list[Any]
    tallies: list[Tally]
    default: int  # index of the config default
    learned: int  # index of the best candidate (what exploitation picks)
    chosen: int  # index actually used (differs from ``learned`` when exploring)
    why: str
    explored: bool = False

    @property
    def value(self) -> Any:
        return self.candidates[self.chosen]

    def explanation(self) -> dict[str, Any]:
        return {"value": self.value, "why": self.why, "explored": self.explored}


def default_index(config: Config, key: str, candidates: list[Any]) -> int:
    """The config's own value (``<kind>.<param>``) when it is a candidate, else the first one."""
    kind, param = split_key(key)
    value = getattr(getattr(config, kind, None), param, None)
    i = _index(value, candidates) if value is not None else None
    return 0 if i is None else i


def best_index(tallies: list[Tally], default: int, min_decisions: int) -> int:
    """The highest score among the default and the candidates with enough decisions (ties: default)."""
    eligible = [i for i, t in enumerate(tallies) if i == default or t.decisions >= min_decisions]
    return max(eligible, key=lambda i: (tallies[i].score, i == default, -i))


def _evidence(t: Tally) -> str:
    if not t.decisions:
        return "no decisions yet"
    return f"{t.score:.2f} over {t.decisions} decisions, {t.approved} approved"


def _why(c: Choice, min_decisions: int) -> str:
    best, dflt = c.tallies[c.learned], c.tallies[c.default]
    if c.learned != c.default:
        return f"best smoothed approval {_evidence(best)}; config default {c.candidates[c.default]!r}: {_evidence(dflt)}"
    others = [t for i, t in enumerate(c.tallies) if i != c.default and t.decisions >= min_decisions]
    if not others:
        return f"config default ({_evidence(dflt)}); no other candidate has {min_decisions} decisions yet"
    return f"config default is the best: smoothed approval {_evidence(dflt)}"


def _draw(source_sha256: str, key: str) -> random.Random:
    seed = int(hashlib.sha256(f"{source_sha256}:{key}".encode()).hexdigest()[:16], 16)
    return random.Random(seed)


def choose(config: Config, records: list[dict[str, Any]], key: str, source_sha256: str) -> Choice:
    fb = config.feedback
    candidates = list(fb.candidates[key])
    tallies = tally(records, key, candidates)
    default = default_index(config, key, candidates)
    learned = best_index(tallies, default, fb.min_decisions)
    choice = Choice(key, candidates, tallies, default, learned, learned, "")
    choice.why = _why(choice, fb.min_decisions)
    rng = _draw(source_sha256, key)
    if len(candidates) > 1 and rng.random() < fb.explore:
        choice.chosen = rng.choice([i for i in range(len(candidates)) if i != learned])
        choice.explored = True
        choice.why = (f"exploring (feedback.explore={fb.explore:g}); the learned choice is "
                      f"{candidates[learned]!r}: {choice.why}")
    return choice


def reviews_path(config: Config) -> Path:
    from astrowatch.storage.layout import Layout

    return Layout(config.data_dir).reviews_log


def _learned_keys(config: Config, kind: str) -> list[str]:
    """The candidate keys learned for new jobs of ``kind``: none unless ``feedback.learn``."""
    fb = config.feedback
    return [k for k in fb.candidates if split_key(k)[0] == kind] if fb.learn else []


def learns(config: Config, kind: str) -> bool:
    """True when new jobs of ``kind`` get learned defaults (``feedback.learn`` and a candidate of
    that kind): only then does :func:`learned_params` read its ``source_sha256``."""
    return bool(_learned_keys(config, kind))


def learned_params(config: Config, kind: str, source_sha256: str) -> dict[str, Any]:
    """Params for a new job: ``{}`` unless ``feedback.learn``; never raises (ingest must go on)."""
    keys = _learned_keys(config, kind)
    if not keys:
        return {}
    try:
        records = read_decisions(reviews_path(config), root=Path(config.data_dir).resolve())
        choices = [choose(config, records, key, source_sha256) for key in keys]
    except Exception as exc:
        log.warning("learned defaults unavailable; config defaults used", error=str(exc))
        return {}
    params: dict[str, Any] = {split_key(c.key)[1]: c.value for c in choices}
    params[LEARNED_KEY] = {c.key: c.explanation() for c in choices}
    return params


def sidecar_learned(params: dict[str, Any], effective: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The sidecar's ``learned`` entry: the explanations whose value the job still uses (a redo
    that changed the parameter drops it).  ``used: false`` marks a parameter the backend did not
    record in its effective ``params`` (it ignores it)."""
    learned = params.get(LEARNED_KEY)
    if not isinstance(learned, dict):
        return None
    kept = {}
    for key, entry in learned.items():
        param = split_key(key)[1]
        if isinstance(entry, dict) and param in params and same(params[param], entry.get("value")):
            kept[key] = dict(entry) if effective is None else {**entry, "used": param in effective}
    return kept or None


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the reserved ``_``-prefixed keys (what backends and people see)."""
    return {k: v for k, v in params.items() if not str(k).startswith("_")}


def report(config: Config) -> list[dict[str, Any]]:
    """The current choice for every declared parameter, with each candidate's evidence."""
    records = read_decisions(reviews_path(config), root=Path(config.data_dir).resolve())
    rows = []
    for key in config.feedback.candidates:
        c = choose(config, records, key, "")
        rows.append({
            "key": key, "learn": config.feedback.learn, "default": c.candidates[c.default],
            "choice": c.candidates[c.learned], "why": _why(c, config.feedback.min_decisions),
            "explore": config.feedback.explore, "min_decisions": config.feedback.min_decisions,
            "candidates": [{"value": v, **t.as_dict()} for v, t in zip(c.candidates, c.tallies, strict=False)],
        })
    return rows
