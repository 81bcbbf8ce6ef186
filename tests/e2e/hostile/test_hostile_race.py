"""The check-then-open race (issue 22): a group member writes an ordinary theme, then renames a
symlink to a secret over it just as the daemon's stability window closes -- timed attempts spread
around ``watch.stability_seconds``.  Whatever wins, the secret never reaches the tree: each attempt
ends as a result from the real theme or a failure with a reason.  ``make test`` runs a bounded
number; ``make test-long`` at least 500 with a short window."""

from __future__ import annotations

import json

import pytest
from harness import theme_bytes
from hostile import b64, site_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

# Run as the attacker: for attempt i, write theme_<u>.json at start_i, then at
# start_i + stability + offset_i rename a symlink to outside/secret_<u>.json over it.
RACE = r"""
import base64, json, os, sys, time
plan = json.loads(sys.stdin.read())
events = []
t0 = time.monotonic() + 0.2
for i, a in enumerate(plan["attempts"]):
    start = t0 + i * plan["spacing"]
    events.append((start, 0, a))
    events.append((start + plan["stability"] + a["offset"], 1, a))
events.sort(key=lambda e: (e[0], e[1]))
for when, step, a in events:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    folder = os.path.dirname(a["path"])
    if step == 0:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, ".theme.w~")
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(a["theme"]))
        os.rename(tmp, a["path"])
    else:
        tmp = os.path.join(folder, ".theme.l~")
        os.symlink(a["secret"], tmp)
        os.rename(tmp, a["path"])  # atomic: the name is a regular file, then a link to the secret
print(len(events))
"""


def _race(site, attempts: int, stability: float, spacing: float, timeout: float) -> None:
    site.configure(watch={"stability_seconds": stability, "rescan_seconds": 2.0})
    d = site.start()
    users = [f"race{i:03d}" for i in range(attempts)]
    plan = {"stability": stability, "spacing": spacing, "attempts": []}
    for i, user in enumerate(users):
        plan["attempts"].append({
            "path": str(site.user_dir(user) / f"theme_{user}.json"),
            "secret": str(site.secret_theme(user)),
            "theme": b64(theme_bytes(user=user)),
            # from well before to well after the deadline, densest around it
            "offset": stability * (-0.5 + 1.5 * ((i * 7919) % attempts) / max(1, attempts - 1)),
        })
    site.freeze_outside()
    site.attacker.python(RACE, input=json.dumps(plan), timeout=60 + attempts * spacing * 2)
    states = site.after(d, inputs=[(u, f"theme_{u}.json") for u in users],
                        allowed={(u, f"theme_{u}.json"): {"inbox", "failed", "quarantined"} for u in users},
                        timeout=timeout)
    took = sum(1 for u in users if site.results(u, f"theme_{u}"))
    refused = sum(1 for u in users if site.failed_record(u, f"theme_{u}.json"))
    print(f"swap race: {attempts} attempts: {took} took the real theme, {refused} refused a link, "
          f"{len(states)} settled")


def test_a_symlink_swapped_over_a_theme_at_the_stability_deadline_is_never_read(site):
    _race(site, attempts=24, stability=0.3, spacing=0.12, timeout=60)


@pytest.mark.long
def test_five_hundred_swaps_at_the_stability_deadline(site):
    _race(site, attempts=500, stability=0.1, spacing=0.03, timeout=600)
