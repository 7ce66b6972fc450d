"""The parsers and the multipart stack stay at releases with the known fixes.

starlette >= 0.49.1 and python-multipart >= 0.0.27 (multipart DoS advisories); pypdf >= 6.1.3.
Both the pins in the requirements files and what is installed are checked. Whether a newer release or
an advisory exists is a question for the package index, asked by ``make audit`` (tools/audit.py), never
by the test suite: no upstream release may turn the tests red.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"starlette": "0.49.1", "python-multipart": "0.0.27", "pypdf": "6.1.3"}


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for path in (ROOT / "shared" / "requirements.txt", ROOT / "services" / "documents" / "requirements.txt"):
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][^\s;#]*)", line.strip())
            if match:
                pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_pinned_and_installed_releases_meet_the_floor(package: str) -> None:
    pins = _pins()
    assert package in pins, f"{package} is not pinned with == in the requirements"
    assert _v(pins[package]) >= _v(FLOORS[package]), f"{package} pinned at {pins[package]}"
    assert version(package) == pins[package], f"{package} installed {version(package)}, pinned {pins[package]}"
