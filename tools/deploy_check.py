"""``make deploy-check``: build and start every service the way Render does, before anything is pushed.

For each web service of render.yaml, in a copy of the work tree as a fresh clone would have it:

1. a brand-new virtual environment (``python -m venv``, under ``.deploy-check/``),
2. the service's ``buildCommand`` exactly as written, run by a shell from the repository root,
3. its ``preDeployCommand`` (migrations) against a scratch database: a new database on the local
   PostgreSQL when one answers (passed in Render's ``postgres://`` form), otherwise SQLite,
4. its ``startCommand`` exactly as written, with ``PORT`` set and render.yaml's environment (generated
   values and private addresses replaced by local ones), until ``healthCheckPath`` answers 200.

Then render.yaml's static site (the web app): its ``buildCommand`` (npm ci, npm run build) in the same
copy, with its build environment (VITE_API_URL); the size of ``staticPublishPath`` and of what the first
page downloads (tools/web_bundle.py) are printed. ``make deploy-check CHECK=web`` checks it alone.

A network guard (an audit hook installed into the new environment by a ``.pth`` file) refuses every
connection and name lookup that is not loopback and records it. The check fails when a service does
not come up, when gateway, auth or documents install litellm, or when any service reaches the network
while starting (litellm must use its bundled model cost map). It prints one table: packages installed,
install size, start-up time and resident memory after start, against the team's bars.

Background workers (type ``worker``: the analysis worker) are cross-checked first
(``worker_problems``: the same build, build filter, database and queue as their web service, an
existing ``worker`` module, and a compose service running the same command on the same image), and
any problem fails the check. Then, after their web service's check and in its environment (its
virtual environment, its migrated database), each worker is started with its ``startCommand`` and
render.yaml's environment, under the same network guard, until it logs that it takes jobs
(``WORKER_READY``); one job is put on its queue (``probe_worker``: an analysis that does not exist)
and the worker must take it and end it, having asked its database. Its row in the table is
``<service>-worker``. Without a local Redis (the queue) the workers cannot run, and the check says so.

The helpers that read render.yaml, docker-compose.yml, the requirements and the settings classes are
used by tests/deploy as well, so the tests and this check read the same facts from the same code.
"""

from __future__ import annotations

import argparse
import ast
import base64
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.stack import WORKER_READY, free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".deploy-check"
BLUEPRINT = ROOT / "render.yaml"
COMPOSE = ROOT / "docker-compose.yml"
SCHEMAS = ROOT.parent / "shared" / "schemas"
RENDER_SCHEMA = SCHEMAS / "render-blueprint.schema.json"
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.schema.json"

# The one package that belongs to the llm service alone (docs/architecture.md: a service installs only what it uses).
LLM_ONLY = "litellm"
# The team's bars (the issue): start-up seconds and resident MB per worker process.
START_BAR = {"llm": 6.0}
START_BAR_DEFAULT = 2.0
RSS_BAR = {"llm": 250.0}
RSS_BAR_DEFAULT = 80.0
# Variables Render or the start command read that are not settings of our code.
PLATFORM_VARS = {
    "PYTHON_VERSION",
    "WEB_CONCURRENCY",
    "PORT",
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "PROMETHEUS_MULTIPROC_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
}


# --------------------------------------------------------------------------------------------------
# render.yaml and docker-compose.yml


def load_yaml(path: Path) -> Any:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


_BUILD_RE = re.compile(r"services/([A-Za-z0-9_-]+)/requirements\.txt")


def service_of(entry: dict[str, Any]) -> str | None:
    """The service folder a Blueprint web service builds (from its buildCommand)."""
    match = _BUILD_RE.search(entry.get("buildCommand") or "")
    return match.group(1) if match else None


def web_services(blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """render.yaml's Python web services by service folder name (gateway, auth, ...)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in blueprint.get("services") or []:
        if entry.get("type") in ("web", "pserv") and (name := service_of(entry)):
            out[name] = entry
    return out


def static_site(blueprint: dict[str, Any]) -> dict[str, Any]:
    """render.yaml's static site (the web app in web/)."""
    sites = [s for s in blueprint.get("services") or [] if s.get("runtime") == "static"]
    if len(sites) != 1:
        raise ValueError(f"render.yaml has {len(sites)} static sites, expected one (the web app)")
    return sites[0]


def site_headers(site: dict[str, Any], path: str = "/*") -> dict[str, str]:
    """The headers a static site sends on every path (those set for ``path``)."""
    return {h["name"]: h["value"] for h in site.get("headers") or [] if h["path"] == path}


def parse_csp(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: [sources]}."""
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def worker_services(blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """render.yaml's background workers by the service folder they build (documents: the analysis
    worker). A worker shares its web service's build and settings, and serves no HTTP."""
    out: dict[str, dict[str, Any]] = {}
    for entry in blueprint.get("services") or []:
        if entry.get("type") == "worker" and (name := service_of(entry)):
            out[name] = entry
    return out


# The worker of a service: its entry point, run from the service folder as render.yaml starts it.
WORKER_START = "cd services/{name} && PYTHONPATH=../.. python -m ultrai_{name}.worker"
# What a worker needs from the platform: the queue (Key Value) and its service's database.
WORKER_NEEDS = ("REDIS_URL", "DATABASE_URL")


def worker_problems(blueprint: dict[str, Any], compose: dict[str, Any] | None = None) -> list[str]:
    """Cross-checks of the workers against their web services and the code: the same build and
    build filter, a start command that runs the package's ``worker`` module (which exists), the
    queue and the database from the same resources as the web service, the same Python, and (with
    ``compose``) a compose service running the same command on the same image."""
    problems: list[str] = []
    web = web_services(blueprint)
    for name, entry in worker_services(blueprint).items():
        where = entry["name"]
        server = web.get(name)
        if server is None:
            problems.append(f"{where}: builds services/{name}, which has no web service")
            continue
        if entry.get("buildCommand") != server.get("buildCommand"):
            problems.append(f"{where}: buildCommand differs from {server['name']}'s")
        if entry.get("buildFilter") != server.get("buildFilter"):
            problems.append(f"{where}: buildFilter differs from {server['name']}'s")
        if entry.get("startCommand") != WORKER_START.format(name=name):
            problems.append(f"{where}: startCommand is not {WORKER_START.format(name=name)!r}")
        if not (ROOT / "services" / name / f"ultrai_{name}" / "worker.py").exists():
            problems.append(f"{where}: services/{name}/ultrai_{name}/worker.py does not exist")
        if "healthCheckPath" in entry:
            problems.append(f"{where}: a worker serves no HTTP (no healthCheckPath)")
        mine = {v["key"]: v for v in entry.get("envVars") or []}
        theirs = {v["key"]: v for v in server.get("envVars") or []}
        for key in (*WORKER_NEEDS, "PYTHON_VERSION", "ENVIRONMENT", "INTERNAL_TOKEN_SECRET", "LLM_URL"):
            if key not in mine:
                problems.append(f"{where}: {key} is not set")
            elif key in theirs and mine[key] != theirs[key]:
                problems.append(f"{where}: {key} differs from {server['name']}'s")
        if compose is not None:
            command = WORKER_START.format(name=name).replace("python -m", "exec python -m")
            runs = [
                svc_name for svc_name, svc in (compose.get("services") or {}).items() if compose_command(svc) == command
            ]
            if not runs:
                problems.append(f"{where}: no compose service runs {command!r}")
            for svc_name in runs:
                svc = compose["services"][svc_name]
                server_svc = (compose.get("services") or {}).get(name, {})
                if svc.get("image") != server_svc.get("image"):
                    problems.append(f"compose {svc_name}: not the image of compose {name}")
                env = compose_env(svc)
                missing = [k for k in WORKER_NEEDS if not env.get(k)]
                if missing:
                    problems.append(f"compose {svc_name}: {', '.join(missing)} not set")
    return problems


# The analysis queue as the documents service names it and the job its workers run
# (ultrai_documents.analysis.runner; tests/deploy checks they agree).
WORKER_QUEUE = "{prefix}:analyses"
WORKER_JOB = "analysis"


def probe_worker(redis_url: str, prefix: str, timeout: float = 30.0) -> str | None:
    """Put one job on the analysis queue of ``REDIS_KEY_PREFIX`` ``prefix``, for an analysis that
    does not exist: a worker serving that queue must take it and end it ``skipped`` (its claim, a
    query on the service's database, found nothing to run). Returns what went wrong, or None."""
    import asyncio

    from saq import Queue
    from saq.job import TERMINAL_STATUSES, Status

    async def run() -> str | None:
        queue = Queue.from_url(redis_url, name=WORKER_QUEUE.format(prefix=prefix))
        await queue.connect()
        key = f"deploy-check-probe-{secrets.token_hex(8)}"
        try:
            await queue.enqueue(WORKER_JOB, key=key, analysis_id=key, timeout=int(timeout), ttl=600)
            deadline = time.monotonic() + timeout
            job = await queue.job(key)
            while job is not None and job.status not in TERMINAL_STATUSES and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                job = await queue.job(key)
            if job is None:
                return "the probe job vanished from the queue"
            if job.status not in TERMINAL_STATUSES:
                return f"no worker took the probe job within {timeout:.0f} s (it is {job.status.value})"
            if job.status != Status.COMPLETE:
                return f"the probe job ended {job.status.value}: {(job.error or '').strip()[-300:]}"
            if job.result != "skipped":
                return f"the probe job ended {job.result!r}, not 'skipped' (see the worker's log)"
            return None
        finally:
            await queue.disconnect()

    return asyncio.run(run())


def forget_queue(redis_url: str, prefix: str) -> None:
    """Remove every key of ``REDIS_KEY_PREFIX`` ``prefix`` (the queue's, SAQ's and the metrics')."""
    import asyncio

    from redis.asyncio import Redis

    async def run() -> None:
        redis = Redis.from_url(redis_url)
        try:
            for pattern in (f"saq:*{prefix}*", f"{prefix}:*"):
                async for key in redis.scan_iter(match=pattern):
                    await redis.delete(key)
        finally:
            await redis.aclose()

    asyncio.run(run())


def wait_log(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> float | None:
    """Seconds until ``text`` appears in the log at ``path``; None if the process exits first or
    ``timeout`` passes."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.perf_counter() - start
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def service_folders() -> list[str]:
    """Every service in the tree: services/<name>/ with an ultrai_<name> package."""
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/ultrai_*") if p.name == f"ultrai_{p.parent.name}")


def has_migrations(name: str, root: Path = ROOT) -> bool:
    return (root / "services" / name / f"ultrai_{name}" / "migrate.py").exists()


@dataclass
class Placeholders:
    """Local stand-ins for what Render provides at deploy time."""

    ports: dict[str, int] = field(default_factory=dict)  # render service name -> loopback port
    database_url: str | None = None  # None: leave DATABASE_URL unset (SQLite)
    redis_url: str | None = None  # None: leave REDIS_URL unset (in-process)
    generated: dict[tuple[str, str], str] = field(default_factory=dict)
    sync_values: dict[str, str] = field(default_factory=dict)  # sync: false keys given a value


def generate_value() -> str:
    """What Render's generateValue gives: a base64-encoded 256-bit value."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def resolve_env(blueprint: dict[str, Any], entry: dict[str, Any], ph: Placeholders) -> dict[str, str]:
    """A service's environment as Render would hand it out, with local placeholders."""
    by_name = {s.get("name"): s for s in blueprint.get("services") or []}
    env: dict[str, str] = {}
    for var in entry.get("envVars") or []:
        key = var["key"]
        if "value" in var:
            env[key] = str(var["value"])
        elif var.get("generateValue"):
            env[key] = ph.generated.setdefault((entry["name"], key), generate_value())
        elif var.get("sync") is False:
            if key in ph.sync_values:
                env[key] = ph.sync_values[key]
        elif "fromDatabase" in var:
            if ph.database_url:
                env[key] = ph.database_url
        elif "fromService" in var:
            ref = var["fromService"]
            target = by_name.get(ref["name"])
            if target is None:
                raise KeyError(f"{entry['name']}: {key} refers to unknown service {ref['name']!r}")
            if "envVarKey" in ref:
                value = resolve_env(blueprint, target, ph).get(ref["envVarKey"])
                if value is not None:
                    env[key] = value
            elif ref.get("type") in ("keyvalue", "redis"):
                if ph.redis_url:
                    env[key] = ph.redis_url
            else:
                port = ph.ports.get(ref["name"], 10000)
                prop = ref.get("property", "hostport")
                env[key] = {"host": "127.0.0.1", "port": str(port)}.get(prop, f"127.0.0.1:{port}")
    return env


_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation with the given environment (empty by default)."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        current = env.get(name)
        if op in (":-",) and not current:
            return default or ""
        if op == "-" and current is None:
            return default or ""
        return current or ""

    return _INTERP.sub(sub, value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's `environment`, interpolated as with no .env file."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: interpolate(str(v)) for k, v in raw.items() if v is not None}


def compose_command(service: dict[str, Any]) -> str | None:
    """The shell command of a compose service (`/bin/sh -c CMD` form), if any."""
    cmd = service.get("command")
    if isinstance(cmd, list) and len(cmd) == 3 and cmd[0] in ("/bin/sh", "sh") and cmd[1] == "-c":
        return cmd[2]
    if isinstance(cmd, str):
        return cmd
    return None


def gateway_routes(root: Path = ROOT) -> dict[str, tuple[str, ...]]:
    """The gateway's ROUTES table, read from its source (importing it would build the app)."""
    tree = ast.parse((root / "services/gateway/ultrai_gateway/main.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        if target == "ROUTES" and value is not None:
            return ast.literal_eval(value)
    raise LookupError("ROUTES not found in services/gateway/ultrai_gateway/main.py")


# --------------------------------------------------------------------------------------------------
# Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --------------------------------------------------------------------------------------------------
# Requirements: what a buildCommand installs, resolved through installed metadata


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(req_file: Path, cwd: Path = ROOT, seen: set[Path] | None = None) -> list[str]:
    """Requirement specifiers of a pip requirements file: `-r` files relative to the including file,
    local project paths (``./shared[db]``) relative to the directory pip runs in, as pip does."""
    seen = seen if seen is not None else set()
    req_file = req_file.resolve()
    if req_file in seen:
        return []
    seen.add(req_file)
    out: list[str] = []
    for raw in req_file.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += requirement_lines(req_file.parent / line.split(None, 1)[1], cwd, seen)
        elif line.startswith("-"):
            continue
        elif line.startswith((".", "/")):
            path, _, extras = line.partition("[")
            project = tomllib.loads((cwd / path / "pyproject.toml").read_text(encoding="utf-8"))["project"]
            out += list(project.get("dependencies", []))
            for extra in filter(None, (e.strip() for e in extras.rstrip("]").split(","))):
                out += list(project.get("optional-dependencies", {}).get(extra, []))
        else:
            out.append(line)
    return out


def requirement_closure(req_file: Path, cwd: Path = ROOT) -> tuple[set[str], set[str]]:
    """(every distribution the file installs, transitively, by canonical name; names not installed
    in this interpreter, whose own dependencies could not be followed)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found: set[str] = set()
    missing: set[str] = set()
    queue: list[tuple[str, frozenset[str]]] = []

    def push(spec: str, extras: frozenset[str]) -> None:
        req = Requirement(spec)
        if req.marker is not None:
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if not any(req.marker.evaluate(e) for e in envs):
                return
        queue.append((req.name, frozenset(req.extras)))

    for spec in requirement_lines(req_file, cwd):
        push(spec, frozenset())
    done: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, extras = queue.pop()
        key = (_canon(name), extras)
        if key in done:
            continue
        done.add(key)
        found.add(key[0])
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(key[0])
            continue
        for spec in dist.requires or []:
            push(spec, extras)
    return found, missing


FIRST_PARTY_PREFIXES = ("shared", "ultrai_")


def _imports(path: Path, module_level_only: bool) -> list[tuple[str, int]]:
    """(module, line) of absolute imports in a file; imports guarded by ``except ImportError`` are
    optional and left out. ``module_level_only`` skips imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    optional: set[int] = set()

    def catches_import_error(handler: ast.ExceptHandler) -> bool:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        return any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError") for t in types)

    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(catches_import_error(h) for h in node.handlers):
            for inner in node.body:
                optional.update(id(n) for n in ast.walk(inner))
    nested: set[int] = set()
    if module_level_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                nested.update(id(n) for n in ast.walk(node) if n is not node)
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in optional or id(node) in nested:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FIRST_PARTY_PREFIXES or node.module.startswith("ultrai_"):
                # `from shared import x` may name a submodule.
                out += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
            out.append((node.module, node.lineno))
    return out


def third_party_imports(name: str, root: Path = ROOT) -> dict[str, list[str]]:
    """Top-level third-party modules a service's code imports -> where. Everything in the service's
    own package counts (a lazy import inside a request handler fails in production just the same);
    shared/ counts from the modules the service reaches, at module level (shared keeps its optional
    parts, such as the database, behind imports inside functions)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, list[str]] = {}
    pkg = root / "services" / name / f"ultrai_{name}"
    todo: list[tuple[Path, bool]] = [
        (p, False) for p in sorted(pkg.rglob("*.py")) if "migrations/versions" not in p.as_posix()
    ]
    todo += [(p, False) for p in sorted((pkg / "migrations" / "versions").glob("*.py"))]
    seen: set[Path] = set()
    while todo:
        path, module_level_only = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, line in _imports(path, module_level_only):
            top = module.split(".")[0]
            if top in stdlib:
                continue
            if top == "shared":
                parts = module.split(".")
                for n in range(len(parts), 0, -1):
                    candidate = root / Path(*parts[:n]).with_suffix(".py")
                    if n == 1:
                        candidate = root / "shared" / "__init__.py"
                    if candidate.exists():
                        todo.append((candidate, True))
                        break
                continue
            if top.startswith("ultrai_"):
                continue
            found.setdefault(top, []).append(f"{path.relative_to(root)}:{line}")
    return found


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    from importlib import metadata

    return metadata.packages_distributions()


def distributions_for(module: str) -> set[str]:
    """The installed distributions providing a top-level module."""
    return {_canon(d) for d in _packages_distributions().get(module, [])}


# --------------------------------------------------------------------------------------------------
# Settings classes, probed in a clean process (the environment is the only input, as on Render)

_PROBE = r"""
import importlib, json, os, sys
from pydantic import AliasChoices, AliasPath, SecretStr, ValidationError
from pydantic_settings import BaseSettings

name = sys.argv[1]
module = importlib.import_module(f"ultrai_{name}.settings")
classes = [c for c in vars(module).values()
           if isinstance(c, type) and issubclass(c, BaseSettings) and c.__module__ == module.__name__]
leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
if len(leaves) != 1:
    raise SystemExit(f"ultrai_{name}.settings: expected one settings class, found {[c.__name__ for c in leaves]}")
cls = leaves[0]
prefix = cls.model_config.get("env_prefix", "") or ""

def env_names(fname, info):
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [c.upper() if isinstance(c, str) else str(c.path[0]).upper() for c in alias.choices]
    if isinstance(alias, AliasPath):
        return [str(alias.path[0]).upper()]
    if info.alias:
        return [info.alias.upper()]
    return [(prefix + fname).upper()]

def env_default(info):
    # The default as it would be written in an env file; None when unset or secret.
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if value is None or isinstance(value, SecretStr) or value in ([], {}, ()):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)

fields = []
for fname, info in cls.model_fields.items():
    ann = repr(info.annotation)
    fields.append({"field": fname, "env": env_names(fname, info), "required": info.is_required(),
                   "secret": "SecretStr" in ann or "SecretBytes" in ann, "description": info.description,
                   "default": env_default(info),
                   "has_default_value": (not info.is_required())
                   and info.get_default(call_default_factory=True) is not None})

def attempt(env):
    for key in [k for k in os.environ if k not in KEEP]:
        del os.environ[key]
    os.environ.update(env)
    try:
        cls(_env_file=None)
        return None
    except ValidationError as exc:
        return sorted({str(e["loc"][0]).upper() if e["loc"] else e["msg"] for e in exc.errors()})
    except SystemExit as exc:
        return [f"SystemExit: {exc}"]

KEEP = {"PATH", "PYTHONPATH", "HOME", "LANG", "SYSTEMROOT"}
request = json.loads(sys.stdin.read())
results = [attempt(env) for env in request["envs"]]
print(json.dumps({"class": cls.__name__, "fields": fields, "results": results}))
"""


def probe_settings(name: str, envs: list[dict[str, str]], python: str | None = None) -> dict[str, Any]:
    """Introspect ``ultrai_<name>.settings`` and validate it against each of ``envs`` (each alone,
    nothing inherited, no .env file). Returns {"class", "fields", "results"}; a result is None when
    the settings load, else the names of the variables they reject."""
    key = (name, json.dumps(envs, sort_keys=True), python)
    if key not in _PROBED:
        _PROBED[key] = _probe_settings(name, envs, python)
    return _PROBED[key]


# One probe per question and process: the code does not change while a test session runs.
_PROBED: dict[tuple[str, str, str | None], dict[str, Any]] = {}


def _probe_settings(name: str, envs: list[dict[str, str]], python: str | None) -> dict[str, Any]:
    import tempfile

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "services" / name)]),
        "HOME": os.environ.get("HOME", str(ROOT)),
    }
    with tempfile.TemporaryDirectory(prefix="ultrai-settings-") as cwd:
        proc = subprocess.run(
            [python or sys.executable, "-c", _PROBE, name],
            input=json.dumps({"envs": envs}),
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"settings probe for {name} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------------
# The check itself

GUARD_MODULE = r'''
"""deploy-check's network guard: refuses and records every non-loopback connection or lookup."""
import ipaddress
import os
import sys
import traceback

_LOG = os.environ.get("ULTRAI_NETGUARD_LOG")


def _local(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    if host in ("", "localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _hook(event, args):
    if event == "socket.getaddrinfo" or event.startswith("socket.gethostby"):
        host = args[0]
    elif event == "socket.connect":
        address = args[1]
        if not isinstance(address, tuple):
            return
        host = address[0]
    else:
        return
    if _local(host):
        return
    stack = "".join(traceback.format_stack(limit=12)[:-1])
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"pid {os.getpid()}: {event} {host!r} refused\n{stack}\n")
    raise PermissionError(f"deploy-check network guard: {event} to {host!r} refused")


if _LOG:
    sys.addaudithook(_hook)
'''


@dataclass
class Result:
    name: str
    packages: int = 0
    install_mb: float = 0.0
    install_s: float = 0.0
    start_s: float | None = None
    rss_mb: float | None = None
    worker_rss_mb: float | None = None
    cpu_s: float | None = None
    workers: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def log(msg: str) -> None:
    print(msg, flush=True)


def tracked_files(root: Path) -> list[str]:
    """What a fresh clone would have once the work tree is committed: tracked and untracked
    files, less what .gitignore excludes (never .venv, data/ or a local .env)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p]


def copy_tree(src_root: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel in tracked_files(src_root):
        src = src_root / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib", vars={"base": ".", "platbase": "."}))
    return venv / rel


def dists(sp: Path) -> set[str]:
    return {_canon(p.name.split("-")[0]) for p in sp.glob("*.dist-info")}


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def base_env(venv: Path) -> dict[str, str]:
    """Render's shell: the service's virtual environment on PATH and nothing of ours inherited."""
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(venv),
        "HOME": os.environ.get("HOME", str(ROOT)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CACHE_DIR", "SSL_CERT_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def run_shell(command: str, cwd: Path, env: dict[str, str], log_path: Path, timeout: float) -> int:
    with open(log_path, "ab") as out:
        out.write(f"\n$ {command}\n".encode())
        out.flush()
        proc = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    return proc.returncode


_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit)\b.*|.*: invalid setting: .*|^ERROR: .*")


def error_line(path: Path) -> str | None:
    """The last exception or settings error a log shows (what stopped the process)."""
    if not path.exists():
        return None
    found = [line.strip() for line in path.read_text(errors="replace").splitlines() if _ERROR_LINE.match(line.strip())]
    return found[-1] if found else None


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class TreeStats:
    rss_mb: float  # every process
    largest_rss_mb: float  # the largest process (a worker)
    workers: int
    cpu_s: float  # CPU seconds of the busiest process since it started: its start-up cost


def process_tree(pid: int) -> TreeStats:
    """Memory and CPU of a process and its children. With ``--workers N`` uvicorn is a supervisor
    with N spawned worker processes."""
    import psutil

    root = psutil.Process(pid)
    sizes: list[float] = []
    cpus: list[float] = []
    workers = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            sizes.append(p.memory_info().rss / 1e6)
            times = p.cpu_times()
            cpus.append(times.user + times.system)
            cmdline = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            workers += 1
    return TreeStats(sum(sizes), max(sizes, default=0.0), workers or 1, max(cpus, default=0.0))


def settle(pid: int, limit: float = 15.0) -> TreeStats:
    """Wait until the process tree stops using CPU (every worker has finished starting), then
    measure it."""
    deadline = time.monotonic() + limit
    before = process_tree(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = process_tree(pid)
        if now.workers == before.workers and now.cpu_s - before.cpu_s < 0.03:
            return now
        before = now
    return before


def launch(command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A Blueprint command (a startCommand) run as Render runs it, by bash, in a process group of its
    own (``stop_group`` ends it with its children), its output appended to ``log`` after the command."""
    with open(log, "ab") as out:
        out.write(f"\n$ {command}\n".encode())
        out.flush()
        return subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> float | None:
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.02)
    return None


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(25)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def start_service(
    name: str,
    entry: dict[str, Any],
    env: dict[str, str],
    src: Path,
    port: int,
    logs: Path,
    result: Result,
    timeout: float,
    where: str = "",
) -> None:
    """preDeployCommand, then startCommand until healthCheckPath answers 200; measures and stops it.
    ``where`` names a second run (in the image's layout): its failures say so, it measures nothing."""
    label = f"{name}.{where}" if where else name
    netlog = logs / f"{label}.network.log"
    netlog.unlink(missing_ok=True)
    env = {**env, "PORT": str(port), "ULTRAI_NETGUARD_LOG": str(netlog)}
    run_log = logs / f"{label}.run.log"
    run_log.unlink(missing_ok=True)
    prefix = f"{where}: " if where else ""
    if entry.get("preDeployCommand"):
        rc = run_shell(entry["preDeployCommand"], src, env, run_log, timeout=300)
        if rc != 0:
            cause = error_line(run_log)
            result.failures.append(
                f"{prefix}preDeployCommand exited {rc}{': ' + cause if cause else ''}\n{tail(run_log)}"
            )
            return
    t0 = time.perf_counter()
    proc = launch(entry["startCommand"], src, env, run_log)
    try:
        path = entry.get("healthCheckPath") or "/"
        waited = wait_http(f"http://127.0.0.1:{port}{path}", proc, timeout)
        if waited is None:
            state = f"exited {proc.returncode}" if proc.poll() is not None else f"no 200 within {timeout:.0f} s"
            cause = error_line(run_log)
            result.failures.append(
                f"{prefix}did not come up on {path} ({state}){': ' + cause if cause else ''}\n{tail(run_log)}"
            )
            return
        if not where:
            result.start_s = time.perf_counter() - t0
            stats = settle(proc.pid)
            result.rss_mb, result.worker_rss_mb = stats.rss_mb, stats.largest_rss_mb
            result.workers, result.cpu_s = stats.workers, stats.cpu_s
    finally:
        stop_group(proc)
    if netlog.exists() and netlog.stat().st_size:
        result.failures.append(f"{prefix}reached the network while starting (see {netlog}):\n{tail(netlog, 15)}")


def image_layout(name: str, src: Path, dest: Path, root: Path = ROOT) -> Path:
    """The files services/<name>/Dockerfile puts in its image (its COPY instructions, relative to
    its WORKDIR), copied from ``src`` into ``dest``; returns ``dest``, the image's working folder."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    workdir = "/"
    for instruction, args in dockerfile_instructions(root / "services" / name / "Dockerfile"):
        if instruction == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        elif instruction == "COPY":
            parts = [a for a in args.split() if not a.startswith("--")]
            *sources, target = parts
            base = target if target.startswith("/") else f"{workdir.rstrip('/')}/{target}"
            rel = Path(base).relative_to(workdir) if base.startswith(workdir) else Path(base.lstrip("/"))
            for source in sources:
                origin = src / source
                if origin.is_dir():
                    shutil.copytree(origin, dest / rel, dirs_exist_ok=True)
                else:
                    into = dest / rel / origin.name if target.endswith("/") else dest / rel
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into)
    return dest


def _admin_execute(admin_url: str, sql: str) -> None:
    """One statement on the PostgreSQL server (asyncpg from the environment running this check)."""
    import asyncio

    import asyncpg

    admin = admin_url.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(admin, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def scratch_postgres(admin_url: str) -> tuple[str, str] | None:
    """Create a scratch database; returns (name, URL in Render's postgres:// form) or None."""
    name = f"ultrai_deploycheck_{secrets.token_hex(4)}"
    try:
        _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:
        log(f"(no PostgreSQL at {admin_url.split('@')[-1]}: {type(exc).__name__}; using SQLite)")
        return None
    base = admin_url.split("://", 1)[1].rpartition("/")[0]
    return name, f"postgres://{base}/{name}"


def drop_postgres(admin_url: str, name: str) -> None:
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    head = (
        f"{'service':<16} {'packages':>8} {'install MB':>10} {'install s':>9} "
        f"{'start s':>8} {'CPU s':>6} {'bar':>5} {'RSS MB':>7} {'workers':>7} {'per worker':>10} {'bar':>5}  result"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        start_bar = START_BAR.get(r.name, START_BAR_DEFAULT)
        rss_bar = RSS_BAR.get(r.name, RSS_BAR_DEFAULT)
        notes = []
        if r.start_s is not None and r.start_s > start_bar:
            notes.append("start-up over bar")
        if r.worker_rss_mb is not None and r.worker_rss_mb > rss_bar:
            notes.append("memory over bar")
        verdict = "ok" if r.ok else "FAIL"
        if notes:
            verdict += " (" + ", ".join(notes) + ")"
        lines.append(
            f"{r.name:<16} {r.packages:>8} {r.install_mb:>10.1f} {r.install_s:>9.1f} "
            f"{fmt(r.start_s, '.2f'):>8} {fmt(r.cpu_s, '.2f'):>6} {start_bar:>5.1f} {fmt(r.rss_mb, '.1f'):>7} "
            f"{r.workers:>7} {fmt(r.worker_rss_mb, '.1f'):>10} {rss_bar:>5.0f}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "services", nargs="*", help="only these services, or web for the static site (default: all of render.yaml)"
    )
    parser.add_argument("--sqlite", action="store_true", help="use SQLite even when PostgreSQL answers")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DEPLOY_CHECK_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL URL whose user may create databases (a scratch one is created and dropped)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("DEPLOY_CHECK_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for healthCheckPath")
    parser.add_argument("--strict-bars", action="store_true", help="also fail when a bar is exceeded")
    args = parser.parse_args(argv)

    blueprint = load_yaml(BLUEPRINT)
    services = web_services(blueprint)
    worker_issues = worker_problems(blueprint, load_yaml(COMPOSE))
    for problem in worker_issues:
        log(f"worker: {problem}")
    if worker_issues:
        return 1
    names = args.services or [*services, "web"]
    with_site = "web" in names
    names = [n for n in names if n != "web"]
    unknown = [n for n in names if n not in services]
    if unknown:
        log(f"not in render.yaml: {', '.join(unknown)}")
        return 2

    WORK.mkdir(exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    src = WORK / "src"
    log(f"deploy-check: copying the work tree as a clone would have it into {src.relative_to(ROOT)}")
    copy_tree(ROOT, src)

    ph = Placeholders(ports={entry["name"]: 0 for entry in services.values()})
    for entry in services.values():
        ph.ports[entry["name"]] = free_port()
    scratch = None
    # A scratch database only for Python services (the static site needs none).
    if not args.sqlite and names:
        scratch = scratch_postgres(args.database_url)
        if scratch:
            ph.database_url = scratch[1]
    redis_host, _, redis_port = args.redis_url.split("://", 1)[1].split("/")[0].rpartition(":")
    if port_open(redis_host or "127.0.0.1", int(redis_port or 6379)):
        ph.redis_url = args.redis_url
    log(
        f"database: {'PostgreSQL ' + scratch[0] if scratch else 'SQLite'}; "
        f"key value: {'Redis' if ph.redis_url else 'in-process'}"
    )

    workers = worker_services(blueprint)
    results: list[Result] = []
    try:
        for name in names:
            results.append(check_service(name, services[name], blueprint, ph, src, logs, args.timeout))
            if name not in workers:
                continue
            if not results[-1].ok:
                log(f"[{name}-worker] not started: its service failed")
            elif ph.redis_url is None:
                log(f"[{name}-worker] NOT CHECKED: no Redis at {args.redis_url} (the queue it takes jobs from)")
            else:
                results.append(check_worker(name, workers[name], results[-1], blueprint, ph, src, logs, args.timeout))
    finally:
        if scratch:
            try:
                drop_postgres(args.database_url, scratch[0])
            except Exception as exc:
                log(f"could not drop {scratch[0]}: {exc}")

    site_failures: list[str] = []
    if with_site:
        site_failures = check_site(static_site(blueprint), src, logs)

    log("")
    if results:
        log(table(results))
    if with_site:
        log("web: " + ("FAILED: " + "; ".join(site_failures) if site_failures else "ok"))
    failed = [r for r in results if not r.ok]
    for r in failed:
        log(f"\n{r.name} FAILED:")
        for failure in r.failures:
            log("  " + failure.replace("\n", "\n    "))
    if args.strict_bars:
        over = [r.name for r in results if "over bar" in table([r])]
        if over:
            log(f"\nover a bar: {', '.join(over)}")
            return 1
    return 1 if failed or site_failures else 0


def check_site(site: dict[str, Any], src: Path, logs: Path) -> list[str]:
    """Build the static site as Render does; print the size of what it publishes. The failures."""
    build_log = logs / "web.build.log"
    build_log.unlink(missing_ok=True)
    if not shutil.which("npm"):
        return ["npm is not installed (Node.js 20+ and npm build the web app)"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(ROOT)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "CI": "true",
        **{k: os.environ[k] for k in ("npm_config_cache", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE") if k in os.environ},
        **{var["key"]: str(var["value"]) for var in site.get("envVars") or [] if "value" in var},
    }
    log(f"[web] {site['buildCommand']}  (VITE_API_URL={env.get('VITE_API_URL')})")
    t0 = time.perf_counter()
    rc = run_shell(site["buildCommand"], src, env, build_log, timeout=900)
    took = time.perf_counter() - t0
    if rc != 0:
        return [f"buildCommand exited {rc}\n{tail(build_log)}"]
    dist = src / site["staticPublishPath"]
    if not (dist / "index.html").is_file():
        return [f"{site['staticPublishPath']}/index.html was not built"]
    from tools.web_bundle import measure

    bundle = measure(dist)
    log(f"[web] built in {took:.1f} s: {bundle.summary()}")
    return []


def check_service(
    name: str,
    entry: dict[str, Any],
    blueprint: dict[str, Any],
    ph: Placeholders,
    src: Path,
    logs: Path,
    timeout: float,
) -> Result:
    result = Result(name)
    venv = WORK / "venvs" / name
    build_log = logs / f"{name}.build.log"
    build_log.unlink(missing_ok=True)
    (logs / f"{name}.run.log").unlink(missing_ok=True)
    if venv.exists():
        shutil.rmtree(venv)
    log(f"[{name}] new virtual environment, then: {entry['buildCommand']}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    sp = site_packages(venv)
    before, size_before = dists(sp), tree_size(sp)
    env = base_env(venv)
    t0 = time.perf_counter()
    rc = run_shell(entry["buildCommand"], src, env, build_log, timeout=1800)
    result.install_s = time.perf_counter() - t0
    if rc != 0:
        cause = error_line(build_log)
        result.failures.append(f"buildCommand exited {rc}{': ' + cause if cause else ''}\n{tail(build_log)}")
        return result
    after = dists(sp)
    result.packages = len(after - before)
    result.install_mb = (tree_size(sp) - size_before) / 1e6
    if name != "llm" and LLM_ONLY in after:
        result.failures.append(f"installs {LLM_ONLY}, which belongs to the llm service alone")
    # The guard goes in after the measurements, so it is not counted as installed.
    (sp / "_ultrai_netguard.py").write_text(GUARD_MODULE, encoding="utf-8")
    (sp / "_ultrai_netguard.pth").write_text("import _ultrai_netguard\n", encoding="utf-8")
    env.update(resolve_env(blueprint, entry, ph))
    env["DATA_DIR"] = str(WORK / "data" / name)
    shutil.rmtree(WORK / "data" / name, ignore_errors=True)
    log(f"[{name}] {result.packages} packages, {result.install_mb:.1f} MB; starting: {entry['startCommand']}")
    start_service(name, entry, env, src, ph.ports[entry["name"]], logs, result, timeout)
    if result.ok and (ROOT / "services" / name / "Dockerfile").exists():
        # Again with only what the service's Docker image holds: the same venv, its files alone.
        image = image_layout(name, src, WORK / "image" / name)
        log(f"[{name}] again in the Docker image's layout: {', '.join(sorted(p.name for p in image.iterdir()))}")
        start_service(name, entry, env, image, ph.ports[entry["name"]], logs, result, timeout, where="image")
    log(f"[{name}] {'ok' if result.ok else 'FAILED'}")
    return result


def check_worker(
    name: str,
    entry: dict[str, Any],
    server: Result,
    blueprint: dict[str, Any],
    ph: Placeholders,
    src: Path,
    logs: Path,
    timeout: float,
) -> Result:
    """Service ``name``'s background worker, in the virtual environment its web service's check
    built: its startCommand with render.yaml's environment until it logs WORKER_READY, then one
    probe job through its queue (``probe_worker``); measured like a web service, then stopped."""
    label = f"{name}-worker"
    result = Result(label, packages=server.packages, install_mb=server.install_mb, install_s=server.install_s)
    assert ph.redis_url is not None
    netlog = logs / f"{label}.network.log"
    netlog.unlink(missing_ok=True)
    run_log = logs / f"{label}.run.log"
    run_log.unlink(missing_ok=True)
    # A queue of its own on the local Redis: the probe touches nothing a local `make dev` uses.
    prefix = f"deploycheck-{secrets.token_hex(4)}"
    env = {
        **base_env(WORK / "venvs" / name),
        **resolve_env(blueprint, entry, ph),
        # The web service's data folder: with SQLite, the database its preDeployCommand migrated.
        "DATA_DIR": str(WORK / "data" / name),
        "REDIS_KEY_PREFIX": prefix,
        "ULTRAI_NETGUARD_LOG": str(netlog),
    }
    log(f"[{label}] starting: {entry['startCommand']}")
    proc = launch(entry["startCommand"], src, env, run_log)
    try:
        waited = wait_log(run_log, WORKER_READY, proc, timeout)
        if waited is None:
            state = f"exited {proc.returncode}" if proc.poll() is not None else f"not within {timeout:.0f} s"
            cause = error_line(run_log)
            result.failures.append(
                f"did not log {WORKER_READY!r} ({state}){': ' + cause if cause else ''}\n{tail(run_log)}"
            )
            return result
        result.start_s = waited
        stats = settle(proc.pid)
        result.rss_mb, result.worker_rss_mb = stats.rss_mb, stats.largest_rss_mb
        result.workers, result.cpu_s = stats.workers, stats.cpu_s
        problem = probe_worker(ph.redis_url, prefix, timeout=min(timeout, 30.0))
        if problem:
            result.failures.append(f"does not take jobs: {problem}\n{tail(run_log)}")
        else:
            log(f"[{label}] took a job from its queue and ended it")
    finally:
        stop_group(proc)
        # The shell exits by the signal, or with the worker's status (0: it stopped cleanly).
        if proc.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            result.failures.append(f"exited {proc.returncode} on SIGTERM\n{tail(run_log)}")
        forget_queue(ph.redis_url, prefix)
    if netlog.exists() and netlog.stat().st_size:
        result.failures.append(f"reached the network while starting (see {netlog}):\n{tail(netlog, 15)}")
    log(f"[{label}] {'ok' if result.ok else 'FAILED'}")
    return result


if __name__ == "__main__":
    sys.exit(main())
