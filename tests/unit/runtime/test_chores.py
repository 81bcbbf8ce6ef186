"""runtime.chores: each chore at its own interval, one crash reported without stopping the others."""

from __future__ import annotations

from astrowatch.runtime.chores import Chore, Chores


def _guard(errors: list[str]):
    def guard(name, fn):
        try:
            return fn()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
            return None
    return guard


def test_a_crashing_chore_is_reported_and_the_others_still_run():
    ran: list[str] = []
    errors: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    chores = Chores([Chore("a", lambda: ran.append("a")), Chore("boom", boom), Chore("b", lambda: ran.append("b"))],
                    guard=_guard(errors))
    chores.tick(1.0)
    chores.tick(2.0)
    assert ran == ["a", "b", "a", "b"] and errors == ["boom: boom", "boom: boom"]


def test_intervals_conditions_and_switched_off_chores():
    ran: list[tuple[str, float]] = []
    allowed = {"gated": False}
    chores = Chores([
        Chore("every2", lambda: ran.append(("every2", now)), every=lambda: 2.0),
        Chore("off", lambda: ran.append(("off", now)), every=lambda: None),
        Chore("gated", lambda: ran.append(("gated", now)), when=lambda: allowed["gated"]),
        Chore("later", lambda: ran.append(("later", now)), every=lambda: 10.0, last=0.0),
    ], guard=_guard([]))
    for now in (0.0, 1.0, 2.0, 3.0, 4.5):
        allowed["gated"] = now >= 3.0
        chores.tick(now)
    assert ran == [("every2", 0.0), ("every2", 2.0), ("gated", 3.0), ("every2", 4.5), ("gated", 4.5)]
    now = 10.0
    chores.tick(now)
    assert ("later", 10.0) in ran and chores["later"].last == 10.0


def test_a_chore_may_ask_for_its_next_turn_sooner():
    ran: list[float] = []
    backlog = [True, True, False]

    def batch() -> float | None:
        ran.append(now)
        return 5.0 if backlog.pop(0) else None

    chores = Chores([Chore("retention", batch, every=lambda: 60.0)], guard=_guard([]))
    for now in (0.0, 4.0, 5.0, 9.0, 10.0, 20.0, 69.0, 70.0):
        chores.tick(now)
    assert ran == [0.0, 5.0, 10.0, 70.0]
