"""Learned defaults, driven by a simulated reviewer through the real ledger and Reviewer.

Every simulated job is created with :func:`astrowatch.pipeline.feedback.learned_params` (what ingest
calls), published into the ledger with the parameters it used, then decided through
:meth:`astrowatch.review.reviewer.Reviewer.finish`, which appends the real ``logs/reviews.jsonl`` line
the next jobs learn from.  Redo decisions queue real child jobs.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from harness import make_image, theme_bytes

from astrowatch.core.errors import ConfigError
from astrowatch.pipeline.feedback import LEARNED_KEY, learned_params, read_decisions, report
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

KEY = "enhance.denoising_strength"
CANDIDATES = [0, 0.2, 0.35]


class Env:
    def __init__(self, tmp_path: Path, **feedback: Any) -> None:
        data = {"data_dir": "data", "astro": {"backend": "wheel", "wheel_size": 256},
                "enhance": {"backend": "lanczos", "min_side": 16},
                "feedback": {"learn": True, "explore": 0.1, "min_decisions": 5,
                             "candidates": {KEY: CANDIDATES}, **feedback}}
        self.mapping = data
        self.config = config_from_mapping(data, base_dir=tmp_path)
        self.layout = Layout(self.config.data_dir)
        self.layout.ensure()
        self.ledger = Ledger(self.layout.ledger_path)
        self.reviewer = Reviewer(self.config, self.layout, self.ledger)
        self.count = 0

    def new_job(self, kind: str = "enhance") -> Job:
        self.count += 1
        sha = hashlib.sha256(f"photo-{self.count}".encode()).hexdigest()
        return self.ledger.create_job(kind=kind, user="gaby", source=f"Utilisateurs/gaby/p{self.count}.jpg",
                                      source_sha256=sha, params=learned_params(self.config, kind, sha))

    def publish(self, job: Job, used: dict[str, Any], backend: str = "sdapi") -> Job:
        """What the worker records: the effective params the result was made with."""
        params = {"backend": backend, "seed": 1, **used}
        assert self.ledger.transition(job.id, "queued", "running", attempts=1)
        assert self.ledger.transition(job.id, "running", "publishing", result={
            "image": f"p{self.count}.{job.id}.png", "backend": backend, "params": params, "description": "d"})
        assert self.ledger.transition(job.id, "publishing", "inbox")
        return self.ledger.get(job.id)

    def decide(self, job: Job, decision: str, overrides: dict[str, Any] | None = None, wait: float = 0.0) -> None:
        data: dict[str, Any] = {"decided_at": time.time() + wait, "caption": "d\n"}
        if decision == "redo":
            data["overrides"] = {**job.params, **(overrides or {})}
        assert self.ledger.transition(job.id, "inbox", "deciding", decision=decision, decision_data=data)
        self.reviewer.finish(self.ledger.get(job.id))

    def used_value(self, job: Job) -> Any:
        return job.params.get("denoising_strength", self.config.enhance.denoising_strength)

    def reviews(self) -> list[dict[str, Any]]:
        return read_decisions(self.layout.root / "logs" / "reviews.jsonl")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _run(env: Env, n: int, prefs: dict[float, float], seed: int = 7) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        job = env.new_job()
        value = env.used_value(job)
        job = env.publish(job, {"denoising_strength": value})
        env.decide(job, "approve" if rng.random() < prefs[float(value)] else "reject")
        jobs.append(job)
    return jobs


PREFS = {0.0: 0.2, 0.2: 0.9, 0.35: 0.2}  # the reviewer likes 0.2


def test_learned_default_converges_to_the_preferred_value(tmp_path: Path) -> None:
    env = Env(tmp_path, explore=0.3)
    jobs = _run(env, 90, PREFS)
    first = jobs[0].params[LEARNED_KEY][KEY]
    assert first["explored"] or (first["value"] == 0 and first["why"].startswith("config default"))
    row = report(env.config)[0]
    assert row["choice"] == 0.2 and row["default"] == 0
    exploiting = [j for j in jobs[-30:] if not j.params[LEARNED_KEY][KEY]["explored"]]
    assert exploiting and all(j.params["denoising_strength"] == 0.2 for j in exploiting)
    why = exploiting[-1].params[LEARNED_KEY][KEY]["why"]
    assert why.startswith("best smoothed approval 0.9") and "config default 0: 0." in why
    approvals = [r["decision"] == "approve" for r in env.reviews()]
    assert sum(approvals[-30:]) > sum(approvals[:30])  # learning pays


def test_learn_false_changes_nothing(tmp_path: Path) -> None:
    env = Env(tmp_path, learn=False, explore=0.3)
    jobs = _run(env, 40, {0.0: 0.1, 0.2: 0.9, 0.35: 0.9})
    assert all(j.params == {} for j in jobs)
    assert all(env.ledger.get(j.id).params == {} for j in jobs)
    row = report(env.config)[0]
    assert row["learn"] is False and row["choice"] == 0  # nothing else has evidence


def test_default_holds_until_min_decisions(env: Env) -> None:
    for i in range(4):  # four approvals of 0.35, all from exploration-free forced jobs
        job = env.publish(env.ledger.create_job(kind="enhance", user="gaby", source=f"Utilisateurs/gaby/x{i}.jpg",
                                                source_sha256="ab" * 32), {"denoising_strength": 0.35})
        env.decide(job, "approve")
    assert report(env.config)[0]["choice"] == 0
    assert "no other candidate has 5 decisions yet" in report(env.config)[0]["why"]
    job = env.publish(env.ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/x5.jpg",
                                            source_sha256="cd" * 32), {"denoising_strength": 0.35})
    env.decide(job, "approve")
    row = report(env.config)[0]
    assert row["choice"] == 0.35
    assert row["candidates"][2] == {"value": 0.35, "decisions": 5, "approved": 5, "redo_votes": 0,
                                    "approval_rate": 1.0, "score": round(6 / 7, 3)}


def test_explore_fraction_is_respected_and_reproducible(tmp_path: Path) -> None:
    env = Env(tmp_path, explore=0.2)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    chosen = [learned_params(env.config, "enhance", sha) for sha in shas]
    explored = sum(p[LEARNED_KEY][KEY]["explored"] for p in chosen)
    assert 0.17 < explored / len(shas) < 0.23
    assert {p["denoising_strength"] for p in chosen if p[LEARNED_KEY][KEY]["explored"]} == {0.2, 0.35}
    assert learned_params(env.config, "enhance", shas[5]) == chosen[5]  # seeded from the source sha
    assert learned_params(env.config, "astro", shas[5]) == {}  # no astro candidates declared
    none = Env(tmp_path / "b", explore=0.0)
    assert not any(learned_params(none.config, "enhance", s)[LEARNED_KEY][KEY]["explored"] for s in shas[:200])


def test_redo_overrides_are_votes_for_the_value_asked(env: Env) -> None:
    # Every result made with the default 0 is sent back asking for 0.35; nothing is ever approved.
    for _ in range(5):
        job = env.publish(env.new_job(), {"denoising_strength": 0})
        env.decide(job, "redo", {"denoising_strength": 0.35})
    children = [j for j in env.ledger.by_state("queued") if j.parent_id]
    assert len(children) == 5 and all(c.params["denoising_strength"] == 0.35 for c in children)
    row = report(env.config)[0]
    zero, _, high = row["candidates"]
    assert (zero["decisions"], zero["approved"]) == (5, 0)  # a redo rejects the value it replaced
    assert (high["decisions"], high["approved"], high["redo_votes"]) == (5, 5, 5)
    assert row["choice"] == 0.35
    # A redo that keeps the value (e.g. asks for another seed) is no vote.
    job = env.publish(env.new_job(), {"denoising_strength": 0.2})
    env.decide(job, "redo", {"denoising_strength": 0.2, "seed": 9})
    assert report(env.config)[0]["candidates"][1]["redo_votes"] == 0


def test_last_decision_wins_and_torn_lines_are_skipped(env: Env) -> None:
    log = env.layout.root / "logs" / "reviews.jsonl"
    job = env.publish(env.new_job(), {"denoising_strength": 0.2})
    env.decide(job, "reject")
    line = json.loads(log.read_text().splitlines()[-1])
    with log.open("a") as fh:  # the same job decided again (a replayed finisher), then a torn line
        fh.write(json.dumps({**line, "decision": "approve"}) + "\n" + '{"job_id": "abc", "deci')
    records = env.reviews()
    assert [r["decision"] for r in records] == ["approve"]
    assert report(env.config)[0]["candidates"][1]["approved"] == 1


def test_bad_candidate_keys_are_config_errors(tmp_path: Path) -> None:
    for bad, words in [({"denoising_strength": [0]}, "not a tunable parameter"),
                       ({"enhance.seed": [1, 2]}, "seed cannot be learned"),
                       ({"astro.style": []}, "at least one candidate"),
                       ({"astro.style": ["a", "a"]}, "repeat"),
                       ({"astro.style": [{"x": 1}]}, "not a plain value")]:
        with pytest.raises(ConfigError, match=words):
            config_from_mapping({"feedback": {"candidates": bad}}, base_dir=tmp_path)


# -- through the real ingest and worker --------------------------------------------------------------
def _ingest_and_run(env: Env, path: Path) -> dict[str, Any]:
    from astrowatch.backends.base import CancelToken
    from astrowatch.intake.ingest import Ingest
    from astrowatch.runtime.worker import Worker

    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(path)) == "job"
    worker = Worker(env.config, env.layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    job = worker.ledger.claim_next()
    worker.execute(job)
    worker.pool.close()
    sidecar = next((env.layout.root / "inbox" / job.user).glob(f"*.{job.id}.json"))
    return {"job": env.ledger.get(job.id), "sidecar": json.loads(sidecar.read_text())}


def test_ingest_applies_learned_style_and_the_sidecar_says_why(tmp_path: Path) -> None:
    env = Env(tmp_path, explore=0.0, candidates={"astro.style": ["figuratif", "cosmique"]})
    for i in range(5):  # the reviewer approved five cosmique results
        job = env.ledger.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json",
                                    source_sha256=f"{i:064x}")
        env.decide(env.publish(job, {"style": "cosmique"}), "approve")
    theme = env.layout.root / "Utilisateurs" / "gaby" / "theme_gaby.json"
    theme.parent.mkdir(parents=True)
    theme.write_bytes(theme_bytes())
    out = _ingest_and_run(env, theme)
    assert out["job"].params["style"] == "cosmique"
    sidecar = out["sidecar"]
    assert sidecar["params"]["style"] == "cosmique" and sidecar["fusion"]["style"] == "cosmique"
    learned = sidecar["learned"]["astro.style"]
    assert learned["value"] == "cosmique" and learned["explored"] is False and learned["used"] is True
    assert "5 decisions" in learned["why"]
    assert not any(k.startswith("_") for k in sidecar["params"])


def test_enhance_with_learn_off_keeps_params_empty_and_underscore_keys_never_reach_backends(tmp_path: Path) -> None:
    env = Env(tmp_path, learn=False)
    photo = env.layout.root / "Utilisateurs" / "gaby" / "photo.png"
    make_image(photo, (40, 30))
    out = _ingest_and_run(env, photo)
    assert out["job"].params == {} and "learned" not in out["sidecar"]
    # Same image and params plus a reserved "_" key: the backend sees the same task (cache hit).
    from astrowatch.backends.pool import BackendPool
    from astrowatch.pipeline.steps import JobContext, enhance_image

    pool = BackendPool(env.config)
    archived = env.layout.archive_dir("gaby", out["job"].id) / "photo.png"
    ctx = JobContext(env.config, env.layout, pool.get)
    params = {"_learned": {KEY: {"value": 0, "why": "x", "explored": False}}, "denoising_strength": 0}
    first = enhance_image(archived, ctx, job_id="a" * 12, user="gaby", params={"denoising_strength": 0},
                          default_backend="lanczos", fallback_seed=1)
    again = enhance_image(archived, ctx, job_id="b" * 12, user="gaby", params=params,
                          default_backend="lanczos", fallback_seed=1)
    assert (first.extra["cache"], again.extra["cache"]) == ("miss", "hit")
    assert again.extra["learned"][KEY]["used"] is False  # lanczos does not use denoising_strength
