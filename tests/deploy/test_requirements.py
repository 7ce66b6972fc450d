"""What each buildCommand installs, resolved transitively through the installed packages' metadata:
litellm for the llm service alone, and every third-party module a service imports provided by that
service's own requirements (a missing one is an import error on Render, not here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import deploy_check as dc


def closure(name: str) -> set[str]:
    found, missing = dc.requirement_closure(dc.ROOT / "services" / name / "requirements.txt")
    assert not missing, f"{name}: not installed in this environment, run `make install`: {sorted(missing)}"
    return found


def test_litellm_belongs_to_the_llm_service_alone(folders: list[str]) -> None:
    for name in folders:
        if name != "llm":
            assert dc.LLM_ONLY not in closure(name), f"{name} installs {dc.LLM_ONLY}, transitively"


def test_every_imported_module_is_installed_by_the_service(folders: list[str]) -> None:
    problems = []
    for name in folders:
        provided = closure(name)
        for module, where in sorted(dc.third_party_imports(name).items()):
            dists = dc.distributions_for(module)
            if not dists & provided:
                problems.append(
                    f"{name}: imports {module} ({', '.join(where[:3])}) but services/{name}/requirements.txt "
                    f"does not install {' or '.join(sorted(dists)) or 'any distribution providing it'}"
                )
    assert not problems, "\n".join(problems)


def test_requirements_are_pinned(folders: list[str]) -> None:
    # The shared package's own ranges are pinned by shared/requirements*.txt, which each file includes.
    for name in folders:
        direct = (dc.ROOT / "services" / name / "requirements.txt").read_text().splitlines()
        for line in direct:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith(("-r", ".", "/")):
                assert "==" in line, f"{name}: {line} is not pinned"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_closure_follows_includes_local_projects_extras_and_metadata(tmp_path: Path) -> None:
    # A fake tree shaped like ours: a service file including a shared file and a local project.
    write(
        tmp_path / "lib/pyproject.toml",
        '[project]\nname="lib"\ndependencies=["httpx"]\n[project.optional-dependencies]\nextra=["pyyaml"]\n',
    )
    write(tmp_path / "lib/requirements.txt", "jsonschema==4.26.0  # pinned\n")
    req = write(tmp_path / "svc/a/requirements.txt", "./lib[extra]\n-r ../../lib/requirements.txt\n")
    found, missing = dc.requirement_closure(req, cwd=tmp_path)
    assert not missing
    # httpx -> httpcore -> h11 through installed metadata; jsonschema -> referencing.
    assert {"httpx", "httpcore", "h11", "pyyaml", "jsonschema", "referencing"} <= found
    assert dc.LLM_ONLY not in found
    write(tmp_path / "lib/requirements.txt", "openai\n")
    found, _ = dc.requirement_closure(req, cwd=tmp_path)
    assert "pydantic" in found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import litellm\n", {"litellm"}),
        ("def f():\n    from pypdf import PdfReader\n", {"pypdf"}),
        ("try:\n    import uvloop\nexcept ImportError:\n    uvloop = None\n", set()),
        ("import json, os.path\nfrom shared.settings import ServiceSettings\n", set()),
    ],
)
def test_import_scan(tmp_path: Path, source: str, expected: set[str]) -> None:
    write(tmp_path / "services/x/ultrai_x/__init__.py", "")
    write(tmp_path / "services/x/ultrai_x/mod.py", source)
    write(tmp_path / "shared/__init__.py", "")
    write(tmp_path / "shared/settings.py", "import pydantic\n\ndef lazy():\n    import sqlalchemy\n")
    found = set(dc.third_party_imports("x", root=tmp_path))
    if "shared" in source:
        expected = {"pydantic"}  # module level of the shared module reached; its lazy import is not
    assert found == expected
