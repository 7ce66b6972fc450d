"""The four services' OpenAPI documents, as the apps build them with default settings.

``python -m tools.openapi --check`` compares them with the snapshots in ``tests/openapi/`` and prints
what differs; ``--write`` records the current documents there (after a deliberate API change).
Each service is built in a process of its own, from the tree's sources, in an empty data folder, so
no service's imports or settings reach another's document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from tools.stack import ROOT, SERVICES, service_env

SNAPSHOTS = ROOT / "tests" / "openapi"
_DUMP = (
    "import json, sys; from {package}.main import build; "
    "sys.stdout.write(json.dumps(build().openapi(), indent=1, sort_keys=True))"
)


def document(name: str) -> dict[str, Any]:
    """Build service ``name``'s app with its default settings and return its OpenAPI document."""
    spec = SERVICES[name]
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in service_env(spec).items() if not k.endswith("_URL") or k == "PYTHONPATH"}
        env.update({"DATA_DIR": data, "ENVIRONMENT": "development", "LOG_LEVEL": "ERROR"})
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        out = subprocess.run(
            [sys.executable, "-c", _DUMP.format(package=spec.module.split(".")[0])],
            cwd=data,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    return json.loads(out.stdout)


def differences(name: str, current: dict[str, Any]) -> list[str]:
    """What differs between ``current`` and the snapshot of ``name``, one line per JSON path."""
    path = SNAPSHOTS / f"{name}.json"
    if not path.exists():
        return [f"{name}: no snapshot at {path.relative_to(ROOT)}"]
    recorded = json.loads(path.read_text())
    lines: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a:
                    lines.append(f"{name}: added {where}/{key}")
                elif key not in b:
                    lines.append(f"{name}: removed {where}/{key}")
                else:
                    walk(a[key], b[key], f"{where}/{key}")
        elif a != b:
            lines.append(f"{name}: changed {where}: {json.dumps(a)[:120]} -> {json.dumps(b)[:120]}")

    walk(recorded, current, "")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="compare with tests/openapi/ (exit 1 on a difference)")
    group.add_argument("--write", action="store_true", help="record the current documents in tests/openapi/")
    parser.add_argument("services", nargs="*", default=list(SERVICES))
    args = parser.parse_args()
    failed = False
    for name in args.services:
        current = document(name)
        if args.write:
            SNAPSHOTS.mkdir(parents=True, exist_ok=True)
            (SNAPSHOTS / f"{name}.json").write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
            print(f"{name}: {len(current.get('paths', {}))} paths recorded")
            continue
        diff = differences(name, current)
        failed = failed or bool(diff)
        print("\n".join(diff) if diff else f"{name}: same as the snapshot")
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
