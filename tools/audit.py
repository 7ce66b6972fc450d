"""``make audit``: which pinned packages have a newer release on the package index.

Reads every ``name==version`` pin in the services' and the shared package's requirements files and
asks PyPI's JSON API for each package's newest release. It reports; it never fails a build, and it is
not part of ``make test`` or CI (a new upstream release must not turn the tests red). Known advisories
are ``make audit``'s second step: pip-audit over the development environment.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][^\s;#]*)")
INDEX = "https://pypi.org/pypi/{name}/json"


def pins() -> dict[str, tuple[str, list[str]]]:
    """Each pinned package: its pinned version and the requirements files that pin it."""
    found: dict[str, tuple[str, list[str]]] = {}
    files = [ROOT / "shared" / name for name in ("requirements.txt", "requirements-db.txt", "requirements-otel.txt")]
    files += sorted((ROOT / "services").glob("*/requirements.txt"))
    files.append(ROOT / "requirements-dev.txt")
    for path in files:
        for line in path.read_text().splitlines():
            match = PIN.match(line.strip())
            if match:
                name = match.group(1).lower()
                version, where = found.get(name, (match.group(2), []))
                where.append(str(path.relative_to(ROOT)))
                found[name] = (version, where)
    return found


def latest(name: str) -> str | None:
    try:
        with urllib.request.urlopen(INDEX.format(name=name), timeout=10) as resp:  # noqa: S310 (fixed https URL)
            return str(json.load(resp)["info"]["version"])
    except (OSError, ValueError, KeyError):
        return None


def main() -> int:
    pinned = pins()
    with ThreadPoolExecutor(max_workers=8) as pool:
        newest = dict(zip(pinned, pool.map(latest, pinned), strict=True))
    behind = 0
    for name, (version, where) in sorted(pinned.items()):
        new = newest[name]
        if new is None:
            state = "index not reachable"
        elif new == version:
            state = "latest"
        else:
            state = f"NEWER: {new}"
            behind += 1
        print(f"{name:24} {version:12} {state:24} {', '.join(where)}")
    print(f"\n{behind} of {len(pinned)} pins have a newer release (check its changelog, then bump the pin).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
