""".env.example lists every variable of every service, each with a comment, its default as the code
has it, and nothing the code does not read; docs/deploy.md's table lists every variable too."""

from __future__ import annotations

import re

import pytest

from tools import deploy_check as dc

ENTRY = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")


def parse(text: str) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = ENTRY.match(line)
        if not match:
            continue
        name, value = match.groups()
        above = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and not ENTRY.match(lines[j]):
            above.append(lines[j].lstrip("# ").strip())
            j -= 1
        entries.setdefault(name, {"value": value, "set": not line.startswith("#"), "comment": " ".join(above)})
    return entries


@pytest.fixture(scope="module")
def example() -> dict[str, dict]:
    return parse((dc.ROOT / ".env.example").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fields(folders: list[str]) -> dict[str, list[dict]]:
    return {name: dc.probe_settings(name, [])["fields"] for name in folders}


def test_every_setting_of_every_service_is_listed_with_a_comment(example: dict, fields: dict) -> None:
    problems = []
    for name, service_fields in fields.items():
        for f in service_fields:
            listed = [e for e in f["env"] if e in example]
            if not listed:
                problems.append(f"{name}: {f['env'][0]} is missing from .env.example")
            elif not example[listed[0]]["comment"] or example[listed[0]]["comment"].startswith("----"):
                problems.append(f"{listed[0]} has no comment above it in .env.example")
    assert not problems, "\n".join(problems)


def test_defaults_are_the_code_defaults(example: dict, fields: dict) -> None:
    problems = []
    for service_fields in fields.values():
        for f in service_fields:
            entry = example.get(f["env"][0])
            if entry and not entry["set"] and entry["value"] != (f["default"] or ""):
                problems.append(f"{f['env'][0]}: .env.example says {entry['value']!r}, the code {f['default']!r}")
    assert not problems, "\n".join(problems)


def test_nothing_listed_that_no_service_reads(example: dict, fields: dict) -> None:
    known = {e for service_fields in fields.values() for f in service_fields for e in f["env"]} | dc.PLATFORM_VARS
    assert not set(example) - known, f"not read by any service: {sorted(set(example) - known)}"


def test_the_example_loads_as_a_dot_env(example: dict, folders: list[str]) -> None:
    """Every value written in the file, commented or not, is one the settings accept."""
    env = {name: e["value"] for name, e in example.items() if e["value"] and name not in dc.PLATFORM_VARS}
    for name in folders:
        result = dc.probe_settings(name, [env])["results"][0]
        assert result is None, f"{name} rejects .env.example's values: {result}"


def test_parser_reads_entries_and_their_comments() -> None:
    parsed = parse("# ---- group\n# What A is.\n# A=1\nB=2\n\n# C does this.\nC=\n")
    assert parsed == {
        "A": {"value": "1", "set": False, "comment": "What A is. ---- group"},
        "B": {"value": "2", "set": True, "comment": ""},
        "C": {"value": "", "set": True, "comment": "C does this."},
    }


def test_deploy_docs_list_every_variable(fields: dict) -> None:
    docs = (dc.ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    missing = sorted({f["env"][0] for fs in fields.values() for f in fs if f"`{f['env'][0]}`" not in docs})
    assert not missing, f"docs/deploy.md's variable table lacks {missing}"


def test_generated_files_are_current() -> None:
    """What `python -m tools.env_docs` would write is what is committed."""
    from tools import env_docs

    order, facts = env_docs.collect()
    text = env_docs.describe(order, facts)
    assert (dc.ROOT / ".env.example").read_text() == env_docs.env_example(order, facts, text), (
        ".env.example is stale: run `python -m tools.env_docs`"
    )
    docs = (dc.ROOT / "docs" / "deploy.md").read_text()
    assert env_docs.docs_table(order, facts, text) in docs, "docs/deploy.md is stale: run `python -m tools.env_docs`"
