"""``make dev``: the four services as four processes on embedded defaults (SQLite, in-process cache),
and the web app on Vite's dev server when Node 20+ and npm are installed.

Prints the URLs (the app's first), prefixes every output line with the process's name, stops all
cleanly on Ctrl-C, and reports a crash of any one (then stops the others: a half-running stack hides
bugs). Without Node it says what to install and runs the API alone.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.stack import ROOT, SERVICES, service_command, service_env

COLOURS = {"gateway": "36", "auth": "35", "documents": "33", "llm": "32", "web": "34"}
WEB = ROOT / "web"
WEB_PORT = 5173
NODE_MAJOR = 20
# The app is opened on localhost, not 127.0.0.1: it calls the gateway as localhost:8000, and only a
# page on the same site gets the session cookie (docs/frontend.md).
APP_URL = f"http://localhost:{WEB_PORT}"


def node_major(version: str) -> int | None:
    """The major version in ``node --version``'s answer ("v20.11.1" gives 20)."""
    match = re.match(r"\s*v?(\d+)\.", version)
    return int(match.group(1)) if match else None


def web_tools() -> str | None:
    """None when Node 20+ and npm are installed, otherwise what to install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return (
            f"Node.js {NODE_MAJOR}+ and npm are not installed (e.g. apt-get install nodejs npm, or https://nodejs.org)"
        )
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    major = node_major(out)
    if major is None or major < NODE_MAJOR:
        return f"Node.js {NODE_MAJOR}+ is needed for the web app (found {out.strip() or 'an unknown version'})"
    return None


def needs_install(web: Path = WEB) -> bool:
    """Whether ``npm ci`` must run first: no node_modules, or one older than package-lock.json."""
    marker = web / "node_modules" / ".package-lock.json"  # npm rewrites it on every install
    lock = web / "package-lock.json"
    if not marker.exists():
        return True
    return lock.exists() and lock.stat().st_mtime > marker.stat().st_mtime


def prepare_web() -> bool:
    """Make the web app ready to start; False (having said why) when it cannot be."""
    if not (WEB / "package.json").exists():
        return False
    problem = web_tools()
    if problem:
        print(f"The web app is not started: {problem}. The API runs alone.", flush=True)
        return False
    if needs_install():
        print("web: npm ci (node_modules is missing or older than package-lock.json)...", flush=True)
        if subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=False).returncode != 0:
            print("web: npm ci failed (above); the API runs alone.", file=sys.stderr, flush=True)
            return False
    return True


def main() -> int:
    host = os.environ.get("DEV_HOST", "127.0.0.1")
    tty = sys.stdout.isatty()
    procs: dict[str, subprocess.Popen] = {}
    order = ["auth", "documents", "llm", "gateway"]
    env_extra = {
        "AUTH_URL": f"http://127.0.0.1:{SERVICES['auth'].port}",
        "DOCUMENTS_URL": f"http://127.0.0.1:{SERVICES['documents'].port}",
        "LLM_URL": f"http://127.0.0.1:{SERVICES['llm'].port}",
        # With REDIS_URL set, analyses go through the queue: documents runs them itself (no worker).
        "ANALYSIS_WEB_CONSUMES": os.environ.get("ANALYSIS_WEB_CONSUMES", "true"),
    }
    with_web = prepare_web()
    for name in order:
        spec = SERVICES[name]
        procs[name] = subprocess.Popen(
            service_command(spec, spec.port, host=host),
            env=service_env(spec, env_extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if with_web:
        # npm starts Vite as its child: a session of their own lets both be stopped together.
        procs["web"] = subprocess.Popen(
            # web/package.json's dev script: vite on 127.0.0.1:5173 (strictPort in vite.config.ts).
            ["npm", "run", "dev"],
            cwd=WEB,
            env={**os.environ, "BROWSER": "none", "FORCE_COLOR": "1" if tty else "0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"UltrAI core is starting (Ctrl-C stops all {len(procs)}):")
    if with_web:
        print(f"  app        {APP_URL}   (Vite dev server; the API is http://localhost:{SERVICES['gateway'].port})")
    for name in ("gateway", "auth", "documents", "llm"):
        spec = SERVICES[name]
        print(f"  {name:<10} http://{host}:{spec.port}   docs: http://{host}:{spec.port}/docs")
    print(f"  aggregated health: http://{host}:{SERVICES['gateway'].port}/health", flush=True)

    status = 0
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The children run in sessions of their own: a closed terminal must stop them through us.
    signal.signal(signal.SIGHUP, stop)
    streams = {p.stdout.fileno(): name for name, p in procs.items() if p.stdout}
    buffers = {fd: b"" for fd in streams}
    while not stopping:
        try:
            ready, _, _ = select.select(list(streams), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                continue
            buffers[fd] += chunk
            *lines, buffers[fd] = buffers[fd].split(b"\n")
            for line in lines:
                name = streams[fd]
                label = f"\033[{COLOURS[name]}m{name:<9}\033[0m" if tty else f"{name:<9}"
                print(f"{label} | {line.decode(errors='replace')}", flush=True)
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(
                    f"\n*** {name} exited with status {proc.returncode}; stopping the others. "
                    f"Its last lines are above.",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                stopping = True
                break

    print("stopping...", flush=True)
    for proc in procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it", file=sys.stderr)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print("all stopped.")
    return status


if __name__ == "__main__":
    sys.exit(main())
