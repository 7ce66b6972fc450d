"""What the auth process loads: auth calls no other service, so neither importing nor starting it
loads httpx (shared.client imports it with a process' first HTTP client; about 1.5 MB per worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.stack import ROOT


def test_starting_auth_loads_no_http_client_library(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from ultrai_auth.main import app\n"
        "async def start_and_stop():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        assert app.state.verifier is not None\n"
        "asyncio.run(start_and_stop())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore')))\n"
    )
    env = {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'services/auth'}",
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
