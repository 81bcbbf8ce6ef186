"""``astrowatch stats [--since YYYY-MM-DD] [--json] [--learned] [--plot FILE.png]``.

Approval rates and counts by kind, backend, style, upscaler, denoising band and sampler; median
time to review; the most common redo overrides; failures by reason.  ``--learned`` shows the
learned default parameters (``feedback.candidates``).  Works whether the daemon runs or not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DIMENSION_TITLES = {"kind": "kind", "backend": "backend", "style": "style", "upscaler": "upscaler",
                    "denoising": "denoising strength", "sampler": "sampler"}


def table(headers: list[str], rows: list[list[Any]], right: set[int] | None = None) -> list[str]:
    """Plain aligned columns (numbers right-aligned)."""
    right = right if right is not None else set(range(1, len(headers)))
    cells = [headers] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        out.append("  " + "  ".join(parts).rstrip())
    return out


def pct(rate: float | None) -> str | None:
    return None if rate is None else f"{rate * 100:.0f}%"


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _header(info: dict[str, Any]) -> list[str]:
    from astrowatch.review.stats import BACKLOG_KEY, INBOX_KEY

    since = f" since {info['since']}" if info["since"] else ""
    lines = [f"data folder: {info['data_dir']}",
             f"decisions{since}: {info['decisions']} (approve {info['approve']}, reject {info['reject']}, "
             f"redo {info['redo']}); approval {pct(info['approval_rate']) or '-'}"]
    if info["decisions"]:
        lines.append(f"median time to review: {duration(info['median_review_s']) or '-'}; "
                     f"captions edited: {info['captions_edited']}")
    inbox = info[INBOX_KEY]
    if inbox[BACKLOG_KEY]:
        lines.append(f"waiting in the inbox: {inbox[BACKLOG_KEY]} (oldest {duration(inbox['oldest_s'])})")
    return lines


def render(info: dict[str, Any]) -> str:
    lines = _header(info)
    for dim, rows in info["by"].items():
        lines += ["", f"by {DIMENSION_TITLES.get(dim, dim)}"]
        lines += table([dim, "decisions", "approve", "reject", "redo", "approval", "median review"],
                       [[r["value"], r["decisions"], r["approve"], r["reject"], r["redo"], pct(r["approval_rate"]),
                         duration(r["median_review_s"])] for r in rows])
    if info["redo_overrides"]:
        lines += ["", "most common redo overrides"]
        lines += table(["override", "count"], [[r["override"], r["count"]] for r in info["redo_overrides"]])
    gen = info["generations"]
    if gen["attempts"]:
        lines += ["", "generation attempts: " + ", ".join(f"{k} {v}" for k, v in sorted(gen["by_status"].items()))]
        lines += table(["backend", "median seconds"],
                       [[b, s] for b, s in gen["median_seconds_by_backend"].items()])
    lines += ["", "failures by reason" if info["failures"] else "failures: none"]
    if info["failures"]:
        lines += table(["count", "reason", "example job"],
                       [[r["count"], r["reason"], r["example"]["job_id"]] for r in info["failures"]], right={0})
    return "\n".join(lines)


def _marks(value: Any, row: dict[str, Any]) -> str:
    from astrowatch.pipeline.feedback import same

    marks = [m for m, v in (("<- choice", row["choice"]), ("config default", row["default"])) if same(v, value)]
    return ", ".join(marks)


def render_learned(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tunable parameters: declare candidate values in feedback.candidates"
    learn = rows[0]["learn"]
    lines = [f"learned defaults ({'on' if learn else 'off: new jobs use the config defaults'}; "
             f"explore {rows[0]['explore']:g}, min decisions {rows[0]['min_decisions']})"]
    for row in rows:
        lines += ["", f"{row['key']}: {row['choice']!r} - {row['why']}"]
        body = [[repr(c["value"]), c["decisions"], c["approved"], c["redo_votes"], pct(c["approval_rate"]),
                 f"{c['score']:.2f}", _marks(c["value"], row)] for c in row["candidates"]]
        lines += table(["value", "decisions", "approved", "redo votes", "approval", "score", ""], body,
                       right={1, 2, 3, 4, 5})
    return "\n".join(lines)


def plot(info: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of approval rate per group, one panel per dimension (matplotlib, Agg)."""
    from astrowatch.core.errors import NotFound

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NotFound("--plot needs matplotlib: install the 'plot' extra "
                       "(pip install 'astrowatch[plot]')") from None
    panels = [(d, rows) for d, rows in info["by"].items() if rows]
    fig, axes = plt.subplots(max(len(panels), 1), 1, figsize=(8, 1.2 + sum(0.45 * len(r) + 0.9 for _, r in panels)),
                             squeeze=False)
    for ax, (dim, rows) in zip(axes[:, 0], panels, strict=False):
        labels = [f"{r['value']} (n={r['decisions']})" for r in rows]
        bars = ax.barh(labels, [r["approval_rate"] or 0 for r in rows], color="#4c72b0")
        ax.bar_label(bars, labels=[pct(r["approval_rate"]) or "-" for r in rows], padding=3, fontsize=8)
        ax.set_xlim(0, 1.08)
        ax.invert_yaxis()
        ax.set_title(f"approval rate by {DIMENSION_TITLES.get(dim, dim)}", fontsize=10, loc="left")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no decisions yet", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    from astrowatch.pipeline.feedback import report
    from astrowatch.review.stats import collect, parse_since
    from astrowatch.runtime.settings import load_config

    since = parse_since(args.since)  # a bad date fails before anything is read
    config = load_config(args.config)
    if args.learned:
        rows = report(config)
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str) if args.json else render_learned(rows))
        return 0
    info = collect(config, since)
    if args.plot:
        plot(info, Path(args.plot))
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False, default=str))
    else:
        print(render(info))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0
