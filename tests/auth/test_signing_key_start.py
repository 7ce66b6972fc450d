"""Several auth workers or instances starting at once on one database each record the signing key
they share (JWT_SIGNING_SECRET or JWT_PRIVATE_KEY): every one of them starts, and the key is
recorded once. Before, all of them saw no row and inserted it, and all but one failed to start on
the duplicate key."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from shared.migrations import upgrade
from ultrai_auth.main import MIGRATIONS, build
from ultrai_auth.settings import AuthSettings

AT_ONCE = 4


async def test_workers_starting_together_all_start(auth_env: dict[str, Any], tmp_dir: Path) -> None:
    settings = AuthSettings(**{**auth_env, "jwt_signing_secret": "s" * 48, "migrate_on_start": False})
    await asyncio.to_thread(upgrade, MIGRATIONS, settings, "auth")
    apps = [build(settings) for _ in range(AT_ONCE)]
    async with AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(stack.enter_async_context(app.router.lifespan_context(app)) for app in apps), return_exceptions=True
        )
        failures = [repr(r) for r in started if isinstance(r, BaseException)]
        assert not failures, failures
        async with apps[0].state.db.sessions() as session:
            from sqlalchemy import func, select

            from ultrai_auth.models import SigningKey

            assert await session.scalar(select(func.count()).select_from(SigningKey)) == 1
