"""The vocabulary in astrowatch.core.jobs: the transition table's shape, the decision folders, and
the values older ledgers, logs and reviews.jsonl files hold."""

from __future__ import annotations

import pytest

from astrowatch.core.errors import IllegalTransition
from astrowatch.core.jobs import (
    ASTRO_BACKENDS,
    ENHANCE_BACKENDS,
    INTENTS,
    PENDING,
    STATES,
    TERMINAL,
    TRANSITIONS,
    BackendName,
    Decision,
    IngestOutcome,
    JobKind,
    JobState,
)
from astrowatch.storage.ledger import Ledger


def test_terminal_states_have_no_exits_and_the_others_have_some():
    assert TERMINAL == {s for s in JobState if not TRANSITIONS[s]}
    assert all(TRANSITIONS[s] for s in set(JobState) - TERMINAL)
    assert TERMINAL == {"failed", "delivered", "filed", "rejected", "redone", "superseded", "cancelled"}


def test_the_table_names_every_state_and_only_states():
    assert set(STATES) == set(TRANSITIONS) == set(JobState)
    assert all(nxt <= set(JobState) for nxt in TRANSITIONS.values())
    assert PENDING <= set(JobState) and not PENDING & TERMINAL


def test_intents_are_exactly_the_ing_states_other_than_running():
    # ``waiting`` ends in -ing too, but it is a pause (disk space, a paused backend), not a decision
    # being carried out: recovery leaves it alone, it goes back to ``queued``
    assert INTENTS == {s for s in JobState if s.endswith("ing")} - {JobState.RUNNING, JobState.WAITING}
    assert JobState.WAITING not in INTENTS and TRANSITIONS[JobState.WAITING] == {JobState.QUEUED, JobState.SUPERSEDED,
                                                                                  JobState.CANCELLED}
    assert INTENTS == {"publishing", "deciding", "failing"}


def test_every_state_is_reachable_from_queued():
    seen, todo = {JobState.QUEUED}, [JobState.QUEUED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobState) == set(TRANSITIONS)
    assert TERMINAL == {"failed", "delivered", "filed", "rejected", "redone", "superseded", "cancelled"}
    assert INTENTS <= set(TRANSITIONS)


@pytest.mark.parametrize("decision", list(Decision))
def test_decision_folder_round_trip(decision):
    assert Decision.from_folder(decision.folder) is decision


def test_decision_folders_are_the_review_folders():
    assert {d: d.folder for d in Decision} == {"approve": "approved", "reject": "rejected", "redo": "redo"}
    assert Decision.from_folder("inbox") is None
    assert Decision.from_folder("approve") is None  # the folder, not the word


def test_values_are_the_strings_older_ledgers_and_logs_hold():
    assert [s.value for s in JobState] == ["queued", "running", "waiting", "publishing", "inbox", "deciding",
                                           "failing", "failed", "delivered", "filed", "rejected", "redone",
                                           "superseded", "cancelled"]
    assert [k.value for k in JobKind] == ["astro", "enhance"]
    assert [d.value for d in Decision] == ["approve", "reject", "redo"]
    assert [o.value for o in IngestOutcome] == ["job", "ignored", "skipped", "gone", "unchanged", "duplicate",
                                                "same render", "failed"]
    assert [b.value for b in BackendName] == ["auto", "wheel", "lanczos", "fake", "sdxl", "sdapi", "openai"]
    assert ASTRO_BACKENDS == ("auto", "wheel", "fake", "sdxl", "sdapi", "openai")
    assert ENHANCE_BACKENDS == ("auto", "lanczos", "fake", "sdapi", "sdxl")
    # a member is its string: in f-strings, str(), comparisons and as a dict key
    assert f"{JobState.INBOX}" == str(JobState.INBOX) == "inbox"
    assert {"inbox": 1}[JobState.INBOX] == 1 and JobState("inbox") is JobState.INBOX


def test_a_ledger_reads_back_members(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    job = ledger.create_job(kind=JobKind.ENHANCE, user="gaby", source="Utilisateurs/gaby/a.jpg", source_sha256="s")
    again = ledger.get(job.id)
    assert again.state is JobState.QUEUED and again.kind is JobKind.ENHANCE and again.decision is None


@pytest.mark.parametrize("frm, to", [(JobState.QUEUED, JobState.INBOX), (JobState.INBOX, JobState.DELIVERED),
                                     (JobState.FAILED, JobState.QUEUED), (JobState.RUNNING, JobState.FAILED)])
def test_a_move_not_in_the_table_raises_through_the_real_ledger(tmp_path, frm, to):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    job = ledger.create_job(kind=JobKind.ASTRO, user="gaby", source="Utilisateurs/gaby/theme_gaby.json",
                            source_sha256="s")
    assert to not in TRANSITIONS[frm]
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, frm, to)
    assert ledger.get(job.id).state is JobState.QUEUED  # nothing moved
    assert [h["to_state"] for h in ledger.history(job.id)] == ["queued"]
