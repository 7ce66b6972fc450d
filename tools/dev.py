"""``make dev``: the four services as four processes on embedded defaults (SQLite, in-process cache).

Prints the URLs, prefixes every output line with the service's name, stops all four cleanly on
Ctrl-C, and reports a crash of any one (then stops the others: a half-running stack hides bugs).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from tools.stack import ROOT, SERVICES, service_command, service_env

COLOURS = {"gateway": "36", "auth": "35", "documents": "33", "llm": "32"}


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
    for name in order:
        spec = SERVICES[name]
        procs[name] = subprocess.Popen(
            service_command(spec, spec.port, host=host),
            env=service_env(spec, env_extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    print("UltrAI core is starting (Ctrl-C stops all four):")
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
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it", file=sys.stderr)
            proc.kill()
    print("all four stopped.")
    return status


if __name__ == "__main__":
    sys.exit(main())
