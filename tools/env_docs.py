"""Rewrite .env.example and docs/deploy.md's variable table from the settings classes.

``python -m tools.env_docs`` after adding a setting. Names, defaults and which services read a
variable come from the code (``tools.deploy_check.probe_settings``); what render.yaml sets comes from
render.yaml. Each variable's one-line description is kept from the current .env.example; a new
variable takes the comment written above (or beside) its field in the settings class, and the
command stops, naming the variable, when there is none. tests/deploy/test_env_example.py checks the
result.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from tools import deploy_check as dc

ORDER = ["gateway", "auth", "documents", "llm"]
ENV_EXAMPLE = dc.ROOT / ".env.example"
DOCS = dc.ROOT / "docs" / "deploy.md"
START, END = "<!-- variables:start -->", "<!-- variables:end -->"
ENTRY = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")

HEADER = """\
# Every variable the services read, with its default. Copy to .env for `make dev` or
# `docker compose up`; a line left commented out keeps the default. On Render the Blueprint
# (render.yaml) sets the deployment's values; docs/deploy.md explains each group.
# Written by `python -m tools.env_docs` from the settings classes (descriptions are kept: edit them
# here); tests/deploy/test_env_example.py checks that every setting of every service is listed.
"""

PLATFORM = {
    "PORT": ("10000", "The port a service listens on (Render sets it; make dev and compose use 8000-8003)."),
    "WEB_CONCURRENCY": (
        "1",
        "Worker processes per service (uvicorn --workers); docs/deploy.md gives one per Render plan.",
    ),
    "PROMETHEUS_MULTIPROC_DIR": (
        "",
        "Where the workers of an instance keep their metrics, summed by /metrics (a folder per instance"
        " under it, cleaned at start); with WEB_CONCURRENCY above 1 and this unset: <tmp>/ultrai-metrics."
        " See docs/scaling.md.",
    ),
    "OTEL_EXPORTER_OTLP_ENDPOINT": (
        "",
        "Traces over OTLP/HTTP to this collector (unset: no tracing, nothing of OpenTelemetry's SDK is"
        " imported); needs shared/requirements-otel.txt installed. See docs/scaling.md.",
    ),
    "LITELLM_LOCAL_MODEL_COST_MAP": (
        "True",
        "llm: litellm reads its bundled model cost map instead of fetching it at import (always True).",
    ),
}


def current_descriptions(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """Variable -> the comment lines directly above it in .env.example (without a group header)."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        match = ENTRY.match(line)
        if not match:
            continue
        above: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and not ENTRY.match(lines[j]) and not lines[j].startswith("# --"):
            above.insert(0, lines[j][1:].strip())
            j -= 1
        if above:
            out.setdefault(match.group(1), " ".join(above))
    return out


def source_comments(service: str) -> dict[str, str]:
    """Field name -> the comment above or beside it in the service's settings class (or the base)."""
    out: dict[str, str] = {}
    own = dc.ROOT / "services" / service / f"ultrai_{service}" / "settings.py"
    for path in (dc.ROOT / "shared" / "settings.py", own):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    line = lines[stmt.lineno - 1]
                    text = line.split("  # ", 1)[1].strip() if "  # " in line else ""
                    # The comment directly above, or above the run of fields (no blank line) it
                    # belongs to.
                    j = stmt.lineno - 2
                    while j >= 0 and lines[j].strip() and not lines[j].strip().startswith(("#", "@", "def ")):
                        j -= 1
                    above: list[str] = []
                    while j >= 0 and lines[j].strip().startswith("#"):
                        above.insert(0, lines[j].strip()[1:].strip())
                        j -= 1
                    text = " ".join(above) + (" " + text if text else "") if above else text
                    if text:
                        out[stmt.target.id] = text.strip()
    return out


def collect() -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Every variable in file order (shared first, then each service's own) with its facts."""
    fields = {name: dc.probe_settings(name, [])["fields"] for name in dc.service_folders()}
    names = [n for n in ORDER if n in fields] + sorted(set(fields) - set(ORDER))
    facts: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    shared = set.intersection(*({f["env"][0] for f in fields[n]} for n in names))
    for service in names:
        for f in fields[service]:
            key = f["env"][0]
            if key not in facts:
                order.append(key)
                facts[key] = {
                    "field": f["field"],
                    "default": f["default"],
                    "secret_default": f["has_default_value"] and f["default"] is None,
                    "services": [],
                    "shared": key in shared,
                }
            facts[key]["services"].append(service)
    order = [k for k in order if facts[k]["shared"]] + [k for k in order if not facts[k]["shared"]]
    return order, facts


def describe(order: list[str], facts: dict[str, dict[str, Any]]) -> dict[str, str]:
    known = current_descriptions()
    out: dict[str, str] = {}
    missing = []
    for key in order:
        if key in known:
            out[key] = known[key]
            continue
        comments = {}
        for service in facts[key]["services"]:
            comments.update(source_comments(service))
        text = comments.get(facts[key]["field"])
        if not text:
            missing.append(key)
            continue
        owners = facts[key]["services"]
        out[key] = text if facts[key]["shared"] else f"{', '.join(owners)}: {text}"
    if missing:
        raise SystemExit(
            "no description for " + ", ".join(missing) + ": add a comment above the field in its settings "
            "class, or a comment line above it in .env.example, and run again"
        )
    return out


def env_example(order: list[str], facts: dict[str, dict[str, Any]], text: dict[str, str]) -> str:
    out = [HEADER.rstrip("\n"), ""]
    group = None
    for key in order:
        g = "shared" if facts[key]["shared"] else facts[key]["services"][0]
        if g != group:
            if group is not None:
                out.append("")
            title = (
                "every service (shared/settings.py)" if g == "shared" else f"{g} (services/{g}/ultrai_{g}/settings.py)"
            )
            out.append(f"# ---- {title} ".ljust(98, "-"))
            group = g
        elif out[-1] != "":
            out.append("")
        out += ["# " + line for line in textwrap.wrap(text[key], 96)]
        out.append(f"# {key}={facts[key]['default'] or ''}")
    out += ["", "# ---- the start command and the platform ".ljust(98, "-")]
    for i, (key, (value, line)) in enumerate(PLATFORM.items()):
        if i:
            out.append("")
        out += ["# " + wrapped for wrapped in textwrap.wrap(line, 96)]
        out.append(f"{key}={value}" if key == "LITELLM_LOCAL_MODEL_COST_MAP" else f"# {key}={value}")
    return "\n".join(out) + "\n"


def render_values(blueprint: dict[str, Any]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for service, entry in dc.web_services(blueprint).items():
        for var in entry.get("envVars") or []:
            if "value" in var:
                value = f"`{var['value']}`"
            elif var.get("generateValue"):
                value = "generated"
            elif var.get("sync") is False:
                value = "asked at creation"
            elif "fromDatabase" in var:
                value = f"{var['fromDatabase']['name']} {var['fromDatabase']['property']}"
            else:
                ref = var["fromService"]
                value = f"{ref['name']} {ref.get('property') or ref.get('envVarKey')}"
            out[(service, var["key"])] = value
    return out


def docs_table(order: list[str], facts: dict[str, dict[str, Any]], text: dict[str, str]) -> str:
    rendered = render_values(dc.load_yaml(dc.BLUEPRINT))
    rows = ["| variable | read by | default | render.yaml | what it is |", "|---|---|---|---|---|"]
    for key in order:
        services = facts[key]["services"]
        groups: dict[str, list[str]] = {}
        for service in services:
            if (service, key) in rendered:
                groups.setdefault(rendered[(service, key)], []).append(service)
        if not groups:
            render = "-"
        elif len(groups) == 1 and len(next(iter(groups.values()))) == len(services):
            render = next(iter(groups))
        else:
            render = "; ".join(f"{', '.join(s)}: {v}" for v, s in groups.items())
        default = facts[key]["default"]
        if default is None:
            default = "development value" if facts[key]["secret_default"] else "unset"
        else:
            default = f"`{default}`"
        who = "all" if facts[key]["shared"] else ", ".join(services)
        what = text[key].replace("|", "\\|")
        rows.append(f"| `{key}` | {who} | {default} | {render} | {what} |")
    return "\n".join(rows)


def main() -> int:
    order, facts = collect()
    text = describe(order, facts)
    ENV_EXAMPLE.write_text(env_example(order, facts, text), encoding="utf-8")
    docs = DOCS.read_text(encoding="utf-8")
    if START not in docs or END not in docs:
        raise SystemExit(f"{DOCS} has no {START} ... {END} block")
    head, rest = docs.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{START}\n{docs_table(order, facts, text)}\n{END}{tail}", encoding="utf-8")
    print(f"wrote .env.example and the table in docs/deploy.md: {len(order)} variables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
