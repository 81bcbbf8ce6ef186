"""Statistics from the ledger, ``logs/reviews.jsonl`` and ``logs/generations.jsonl``.

Decisions are grouped by kind, backend, style, upscaler, denoising band and sampler (each read
from the parameters that produced the result), with approval rates and median time to review;
plus the most common redo overrides, generation attempts, and failed jobs by normalised reason.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.core.errors import ConfigError
from astrowatch.core.jobs import Decision, JobState
from astrowatch.pipeline.feedback import read_decisions, same
from astrowatch.storage.jsonlog import read_jsonl_all
from astrowatch.storage.layout import Layout

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

DIMENSIONS = ("kind", "backend", "style", "upscaler", "denoising", "sampler")
DECISIONS = tuple(Decision)
INBOX_KEY, BACKLOG_KEY = "inbox", "waiting"  # the inbox backlog in the output: {"inbox": {"waiting": n, ...}}


def parse_since(text: str | None) -> float | None:
    """``YYYY-MM-DD`` -> local midnight as a timestamp; a clear error for anything else."""
    if not text:
        return None
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"--since {text!r}: not a date; expected YYYY-MM-DD, e.g. 2025-01-31") from None
    return time.mktime(day.timetuple())


def record_time(record: dict[str, Any]) -> float | None:
    try:
        return datetime.strptime(str(record.get("ts")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _after(record: dict[str, Any], since: float | None) -> bool:
    if since is None:
        return True
    at = record_time(record)
    return at is not None and at >= since


def denoising_band(value: Any) -> str | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if x <= 0:
        return "0"
    return "0-0.3" if x <= 0.3 else "0.3-0.5" if x <= 0.5 else ">0.5"


def _first(params: dict[str, Any], *keys: str) -> Any:
    return next((params[k] for k in keys if params.get(k) not in (None, "")), None)


def dimension_values(record: dict[str, Any]) -> dict[str, str | None]:
    """The group each decision falls in, per dimension (``None``: not applicable)."""
    params = _dict(record.get("params"))
    values = {
        "kind": record.get("kind"),
        "backend": record.get("backend") or params.get("backend"),
        "style": params.get("style"),
        "upscaler": _first(params, "upscaler", "resample"),
        "denoising": denoising_band(_first(params, "denoising_strength", "strength")),
        "sampler": _first(params, "sampler_name", "scheduler"),
    }
    return {k: None if v is None else str(v) for k, v in values.items()}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _median(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.median(numbers), 3) if numbers else None


def _row(value: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r.get("decision") for r in records)
    n = len(records)
    return {"value": value, "decisions": n, **{d: counts.get(d, 0) for d in DECISIONS},
            "approval_rate": round(counts.get(Decision.APPROVE, 0) / n, 3) if n else None,
            "median_review_s": _median(r.get("review_seconds") for r in records)}


def group_by(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {d: defaultdict(list) for d in DIMENSIONS}
    for record in records:
        for dim, value in dimension_values(record).items():
            if value is not None:
                groups[dim][value].append(record)
    return {dim: sorted((_row(v, rs) for v, rs in by.items()), key=lambda r: (-r["decisions"], r["value"]))
            for dim, by in groups.items() if by}


def changed_overrides(record: dict[str, Any]) -> dict[str, Any]:
    """What a redo asked for: overrides that differ from the params of the result."""
    overrides = _dict(record.get("overrides"))
    params = _dict(record.get("params"))
    return {k: v for k, v in overrides.items()
            if not str(k).startswith("_") and (k not in params or not same(params[k], v))}


def redo_overrides(records: list[dict[str, Any]], top: int = 10) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    for record in records:
        if record.get("decision") == Decision.REDO:
            counts.update(f"{k}={v}" for k, v in changed_overrides(record).items())
    return [{"override": k, "count": n} for k, n in counts.most_common(top)]


def normalise_reason(reason: str | None, source_name: str = "") -> str:
    """Group failures: drop the file name, keep the first clause, numbers become N."""
    text = (reason or "unknown error").strip()
    if source_name and text.startswith(source_name + ":"):
        text = text[len(source_name) + 1:].strip()
    text = re.split(r";|\(|: ", text, maxsplit=1)[0].strip() or text
    text = re.sub(r"\b[0-9a-f]{12,64}\b", "<id>", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return re.sub(r"\s+", " ", text)[:100]


def failures(config: Config, since: float | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Failed jobs grouped by normalised reason, and the inbox backlog, from the ledger."""
    from astrowatch.storage.ledger_readonly import open_for_reading

    layout = Layout(config.data_dir)
    if not layout.ledger_path.exists():
        return [], {BACKLOG_KEY: 0, "oldest_s": None}
    ledger = open_for_reading(layout)
    try:
        groups: dict[str, list[Any]] = defaultdict(list)
        for job in ledger.by_state(JobState.FAILED):
            if since is None or job.updated_at >= since:
                groups[normalise_reason(job.error, job.source_name)].append(job)
        inbox = ledger.by_state(JobState.INBOX)
    finally:
        ledger.close()
    rows: list[dict[str, Any]] = [{"reason": reason, "count": len(jobs), "kinds": sorted({j.kind for j in jobs}),
             "example": {"job_id": jobs[-1].id, "error": jobs[-1].error}}
            for reason, jobs in groups.items()]
    rows.sort(key=lambda r: (-r["count"], r["reason"]))
    oldest = min((j.updated_at for j in inbox), default=None)
    return rows, {BACKLOG_KEY: len(inbox), "oldest_s": round(time.time() - oldest) if oldest else None}


def generations(path: Path, since: float | None, *, root: Path | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Attempts by status, median seconds per backend; and the last good record per job."""
    status: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    last_ok: dict[str, dict[str, Any]] = {}
    for record in read_jsonl_all(path, root=root):  # with the rotated files (retention.log_max_mb)
        if record.get("status") == "ok" and isinstance(record.get("job_id"), str):
            last_ok[record["job_id"]] = record
        if not _after(record, since):
            continue
        status[str(record.get("status"))] += 1
        if record.get("status") == "ok" and isinstance(record.get("duration_s"), (int, float)):
            durations[str(record.get("backend"))].append(record["duration_s"])
    summary = {"attempts": sum(status.values()), "by_status": dict(status),
               "median_seconds_by_backend": {b: _median(d) for b, d in sorted(durations.items())}}
    return summary, last_ok


def _fill_from_generation(record: dict[str, Any], last_ok: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A decision whose result details were lost takes them from its generation record."""
    if isinstance(record.get("params"), dict) and record.get("backend"):
        return record
    gen = last_ok.get(record["job_id"], {})
    return {**record, "params": record.get("params") or gen.get("params"),
            "backend": record.get("backend") or gen.get("backend")}


def collect(config: Config, since: float | None = None) -> dict[str, Any]:
    layout = Layout(config.data_dir)
    gen_summary, last_ok = generations(layout.generations_log, since, root=layout.root)
    decisions = read_decisions(layout.reviews_log, root=layout.root)
    records = [_fill_from_generation(r, last_ok) for r in decisions if _after(r, since)]
    counts = Counter(r.get("decision") for r in records)
    fails, inbox = failures(config, since)
    edited = sum(1 for r in records if r.get("caption_edited"))
    return {
        "data_dir": str(config.data_dir),
        "since": time.strftime("%Y-%m-%d", time.localtime(since)) if since is not None else None,
        "decisions": len(records), **{d: counts.get(d, 0) for d in DECISIONS},
        "approval_rate": round(counts.get(Decision.APPROVE, 0) / len(records), 3) if records else None,
        "median_review_s": _median(r.get("review_seconds") for r in records),
        "captions_edited": edited,
        "by": group_by(records),
        "redo_overrides": redo_overrides(records),
        "failures": fails,
        INBOX_KEY: inbox,
        "generations": gen_summary,
    }
