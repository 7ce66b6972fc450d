"""The four services as plain processes: one table of how each starts, used by ``make dev``, the
end-to-end tests and the benchmarks alike, so all three run exactly what deploys.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    module: str
    # uvicorn arguments of this service alone (the gateway's edge protocol).
    extra_args: tuple[str, ...] = ()
    # The source tree it runs from (a benchmark may run another checkout beside this one).
    root: Path = ROOT
    # Environment of this service alone, as render.yaml sets it (a variable already set wins).
    env: tuple[tuple[str, str], ...] = ()

    @property
    def app_dir(self) -> Path:
        return self.root / "services" / self.name

    @property
    def url_env(self) -> str:
        return f"{self.name.upper()}_URL"


SERVICES: dict[str, ServiceSpec] = {
    "gateway": ServiceSpec(
        "gateway", 8000, "ultrai_gateway.main:app", ("--http", "ultrai_gateway.server:EdgeProtocol")
    ),
    # argon2's memory faulted in by huge pages (render.yaml's GLIBC_TUNABLES for auth).
    "auth": ServiceSpec("auth", 8001, "ultrai_auth.main:app", env=(("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"),)),
    "documents": ServiceSpec("documents", 8002, "ultrai_documents.main:app"),
    "llm": ServiceSpec("llm", 8003, "ultrai_llm.main:app"),
}


# Background workers: the service whose package and settings they share, and their module.
WORKERS: dict[str, str] = {"documents": "ultrai_documents.worker"}
# What a worker writes to its log once it takes jobs.
WORKER_READY = "analysis worker started"


def worker_command(service: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", WORKERS[service]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_command(spec: ServiceSpec, port: int, host: str = "127.0.0.1", python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "uvicorn",
        spec.module,
        "--app-dir",
        str(spec.app_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "20",
        # Client addresses are worked out by the services from their trusted hops (shared.net),
        # not by uvicorn, which would take any X-Forwarded-For sent from loopback at its word.
        "--no-proxy-headers",
        *spec.extra_args,
    ]


def service_env(spec: ServiceSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The sources in the tree come first, so what runs is what is checked out.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(spec.root), str(spec.app_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in spec.env:
        env.setdefault(key, value)
    env.update(extra or {})
    return env


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_after: float | None = None
    worker: bool = False  # the service's background worker (no port) instead of its web app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.started_at = time.perf_counter()
        command = worker_command(self.spec.name) if self.worker else service_command(self.spec, self.port)
        self.proc = subprocess.Popen(
            command,
            env=service_env(self.spec, self.env),
            cwd=self.spec.root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, path: str = "/live", timeout: float = 30.0) -> float:
        """Wait until ``path`` answers 200 (a worker: until it logs that it takes jobs); returns the
        seconds from start."""
        deadline = time.monotonic() + timeout
        if self.worker:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.spec.name} worker exited with status {self.proc.returncode}: {self.tail()}"
                    )
                if (
                    self.log_path
                    and self.log_path.exists()
                    and WORKER_READY in self.log_path.read_text(errors="replace")
                ):
                    self.ready_after = time.perf_counter() - self.started_at
                    return self.ready_after
                time.sleep(0.05)
            raise TimeoutError(f"{self.spec.name} worker not ready within {timeout} s: {self.tail()}")
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with status {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        self.ready_after = time.perf_counter() - self.started_at
                        return self.ready_after
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.spec.name} not ready on {path} within {timeout} s: {self.tail()}")

    def rss_mb(self) -> float:
        """Resident memory of the service process (and its children), in MB."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 1e6

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the service process and its children have used so far."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total

    def tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Stack:
    """The four services on free loopback ports, wired to each other; for tests and benchmarks."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, names: tuple[str, ...] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.names = names or ("auth", "documents", "llm", "gateway")
        self.ports = {name: free_port() for name in self.names}
        self.env = {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(self.workdir / "data"),
            "LOG_LEVEL": "INFO",
            # With REDIS_URL, analyses go through the queue; documents runs them itself unless a
            # stack starts analysis workers (``start_extra(..., worker=True)``) and turns this off.
            "ANALYSIS_WEB_CONSUMES": "true",
            **{SERVICES[n].url_env: f"http://127.0.0.1:{p}" for n, p in self.ports.items() if n != "gateway"},
            **(env or {}),
        }
        self.per_service_env: dict[str, dict[str, str]] = {}
        # How each service starts (a benchmark may swap one for another checkout's).
        self.specs: dict[str, ServiceSpec] = dict(SERVICES)
        self.procs: dict[str, ServiceProcess] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def process(self, name: str) -> ServiceProcess:
        return ServiceProcess(
            self.specs[name],
            self.ports[name],
            env={**self.env, **self.per_service_env.get(name, {})},
            log_path=self.workdir / f"{name}.log",
        )

    def start(self, name: str, ready_path: str = "/live", timeout: float = 60.0) -> ServiceProcess:
        proc = self.process(name).start()
        self.procs[name] = proc
        proc.wait_ready(ready_path, timeout=timeout)
        return proc

    def start_all(self, timeout: float = 60.0) -> Stack:
        # Start every process first, then wait: start-up runs in parallel.
        for name in self.names:
            self.procs[name] = self.process(name).start()
        for name in self.names:
            self.procs[name].wait_ready("/live", timeout=timeout)
        return self

    def start_extra(
        self, name: str, label: str, *, worker: bool = False, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> ServiceProcess:
        """Another process of service ``name`` (a second instance, or with ``worker`` its background
        worker), with the stack's environment, known as ``label`` (its log: ``<label>.log``)."""
        proc = ServiceProcess(
            SERVICES[name],
            0 if worker else free_port(),
            env={**self.env, **self.per_service_env.get(name, {}), **(env or {})},
            log_path=self.workdir / f"{label}.log",
            worker=worker,
        ).start()
        self.procs[label] = proc
        proc.wait_ready(timeout=timeout)
        return proc

    def stop(self, name: str) -> None:
        if name in self.procs:
            self.procs[name].stop()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()
