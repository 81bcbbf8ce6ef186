"""Fail CI on a skip that is not allowed: ``python tests/support/check_skips.py build/junit.xml``.

Prints every skipped test with its reason, then exits 1 if any reason matches none of the
patterns in ``tests/support/skip_allowlist.txt`` (one regular expression per line, ``#`` comments).
A missing extra, a missing CLIP vocabulary or a broken fixture therefore turns CI red instead
of silently green.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ALLOWLIST = Path(__file__).with_name("skip_allowlist.txt")


def allowed_patterns(path: Path = ALLOWLIST) -> list[re.Pattern[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [re.compile(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def skips(junit: Path) -> list[tuple[str, str]]:
    """(test id, reason) for every skipped test case in a pytest junit XML report."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for skipped in case.findall("skipped"):
            reason = skipped.get("message") or (skipped.text or "").strip()
            reason = re.sub(r"^(Skipped|SKIPPED|skipped): ", "", reason)
            found.append((f"{case.get('classname')}::{case.get('name')}", reason))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/support/check_skips.py JUNIT.xml", file=sys.stderr)
        return 2
    junit = Path(argv[0])
    if not junit.is_file():
        print(f"check_skips: {junit} not found (run pytest with --junitxml={junit})", file=sys.stderr)
        return 2
    patterns = allowed_patterns()
    found = skips(junit)
    refused = [(test, reason) for test, reason in found if not any(p.search(reason) for p in patterns)]
    print(f"skipped: {len(found)} test(s)")
    for test, reason in found:
        mark = "NOT ALLOWED" if (test, reason) in refused else "allowed"
        print(f"  [{mark}] {test}: {reason}")
    if refused:
        print(f"check_skips: {len(refused)} skip(s) not in {ALLOWLIST.name}; fix the cause (or, if a CI "
              "machine may legitimately lack it, add a pattern there)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
