"""Passwords and login (OWASP Password Storage Cheat Sheet, NIST SP 800-63B): argon2id at OWASP
parameters or stronger, rehash on login, equal work and equal answers for unknown emails, NIST
length rules, common passwords refused, and no password or token in the logs."""

from __future__ import annotations

import logging

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from shared.settings import load_settings
from tests.support.users import PASSWORD, bearer, login, new_email, register, register_and_login
from ultrai_auth.models import User
from ultrai_auth.settings import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST, AuthSettings

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
PROD = {
    "environment": "production",
    "jwt_signing_secret": "s" * 48,
    "internal_token_secret": "i" * 48,
}


def test_production_defaults_are_at_least_owasp() -> None:
    settings = AuthSettings(**PROD)
    assert settings.argon2_memory_kib >= OWASP_MEMORY_KIB == 19 * 1024
    assert settings.argon2_time_cost >= OWASP_TIME_COST == 2
    assert settings.argon2_parallelism >= OWASP_PARALLELISM == 1
    # And what the hasher really writes:
    from ultrai_auth.passwords import PasswordService

    service = PasswordService(settings)
    try:
        params = service.hasher.hash("x" * 12).split("$")[3]
    finally:
        service.close()
    assert params == f"m={settings.argon2_memory_kib},t={settings.argon2_time_cost},p={settings.argon2_parallelism}"


@pytest.mark.parametrize(
    ("name", "value"), [("argon2_memory_kib", 4096), ("argon2_time_cost", 1), ("jwt_signing_secret", "short")]
)
def test_production_refuses_weaker_settings(name: str, value, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(AuthSettings, "auth", **{**PROD, name: value})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "auth: invalid setting" in err
    assert "s" * 48 not in err and "i" * 48 not in err  # no secret echoed


def test_production_without_a_signing_key_stops_with_one_clear_line(capsys) -> None:
    with pytest.raises(SystemExit):
        load_settings(AuthSettings, "auth", environment="production", internal_token_secret="i" * 48)
    err = capsys.readouterr().err.strip()
    assert err == "auth: invalid setting: JWT_PRIVATE_KEY or JWT_SIGNING_SECRET must be set in production"


def test_production_refuses_the_development_internal_secret() -> None:
    with pytest.raises(SystemExit):
        load_settings(AuthSettings, "auth", environment="production", jwt_signing_secret="s" * 48)


async def test_stored_hashes_are_argon2id_with_the_configured_parameters(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        async with client.app.state.db.sessions() as db:
            stored = await db.scalar(select(User.password_hash).where(User.email == email))
        assert stored.startswith("$argon2id$v=19$m=64,t=1,p=1$")
        assert PASSWORD not in stored


async def test_hashes_are_upgraded_on_login_when_parameters_change(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
    async with auth_client(argon2_memory_kib=128, argon2_time_cost=2) as client:
        await login(client, email)
        async with client.app.state.db.sessions() as db:
            stored = await db.scalar(select(User.password_hash).where(User.email == email))
        assert stored.startswith("$argon2id$v=19$m=128,t=2,p=1$")
        PasswordHasher().verify(stored, PASSWORD)
        await login(client, email)  # still logs in with the upgraded hash


async def test_unknown_email_and_wrong_password_get_the_same_answer_and_work(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        passwords = client.app.state.passwords
        answers = []
        for body in ({"email": email, "password": "wrong password!"}, {"email": new_email(), "password": "x" * 12}):
            before = passwords.calls
            resp = await client.post(LOGIN, json=body)
            answers.append((resp, passwords.calls - before))
        (wrong, wrong_work), (unknown, unknown_work) = answers
        assert wrong.status_code == unknown.status_code == 401
        assert wrong_work == unknown_work == 1  # one argon2 verification each
        strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
        assert strip(wrong) == strip(unknown)
        varying = {"x-request-id", "content-length"}
        assert {k: v for k, v in wrong.headers.items() if k not in varying} == {
            k: v for k, v in unknown.headers.items() if k not in varying
        }


async def test_a_64_character_password_is_accepted_and_not_truncated(auth_client) -> None:
    async with auth_client() as client:
        long_password = "the quick brown fox jumps over the lazy dog; sixty-four chars!!!"
        assert len(long_password) == 64
        email = await register(client, password=long_password)
        await login(client, email, long_password)
        short = await client.post(LOGIN, json={"email": email, "password": long_password[:63]})
        assert short.status_code == 401
        # And a long passphrase well past any bcrypt-like 72-byte limit:
        passphrase = "correct horse battery staple " * 20
        email2 = await register(client, password=passphrase)
        await login(client, email2, passphrase)
        assert (await client.post(LOGIN, json={"email": email2, "password": passphrase[:72]})).status_code == 401


async def test_an_overlong_password_is_refused_before_hashing(auth_client) -> None:
    async with auth_client() as client:
        passwords = client.app.state.passwords
        before = passwords.calls
        for path in (REGISTER, LOGIN):
            resp = await client.post(path, json={"email": new_email(), "password": "p" * 1025})
            assert resp.status_code == 422
            assert "p" * 50 not in resp.text  # the input is not echoed
        assert passwords.calls == before


async def test_weak_passwords_are_refused_at_registration(auth_client) -> None:
    async with auth_client() as client:
        for password in ("short", "1234567", "password", "Password1", "12345678", "qwertyuiop", "aaaaaaaaaa"):
            resp = await client.post(REGISTER, json={"email": new_email(), "password": password})
            assert resp.status_code == 422, password
            assert resp.json()["detail"].startswith("Invalid request: password:")


async def test_the_email_as_password_is_refused(auth_client) -> None:
    async with auth_client() as client:
        email = new_email("mine")
        assert (await client.post(REGISTER, json={"email": email, "password": email})).status_code == 422


async def test_common_passwords_are_refused_at_password_change(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        resp = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "iloveyou1"},
            headers=bearer(tokens["access_token"]),
        )
        assert resp.status_code == 422


async def test_no_composition_rules(auth_client) -> None:
    async with auth_client() as client:
        for password in ("all lower case words here", "ÄÖÜ mit Umlauten, bitte", "🔑🔑 emoji passphrase 🔑🔑"):
            email = await register(client, password=password)
            await login(client, email, password)


async def test_invalid_email_is_refused(auth_client) -> None:
    async with auth_client() as client:
        for email in ("no-at-sign", "a@b", "two@@example.com", "spa ce@example.com"):
            assert (await client.post(REGISTER, json={"email": email, "password": PASSWORD})).status_code == 422


class Raw(logging.Handler):
    """Every record as the code wrote it, before the redacting filter of shared.logs runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_passwords_and_tokens_never_reach_the_logs(auth_client, capsys) -> None:
    secret_password = "log-canary passphrase 7f3a"
    raw = Raw()
    # No reuse interval: the reuse below is detected (and logged) at once.
    async with auth_client(log_level="DEBUG", refresh_reuse_interval_seconds=0) as client:
        logging.getLogger().handlers.insert(0, raw)
        try:
            email = await register(client, password=secret_password)
            tokens = await login(client, email, secret_password)
            await client.post(LOGIN, json={"email": email, "password": secret_password + "x"})
            await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
            rotated = (
                await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            ).json()
            await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})  # reuse
            await client.post("/api/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
        finally:
            logging.getLogger().removeHandler(raw)
    written = capsys.readouterr().err
    for text in ("\n".join(raw.messages), written):
        assert "refresh token reuse" in text  # the capture works: the reuse warning is there
        for secret in (secret_password, tokens["access_token"], tokens["refresh_token"], rotated["refresh_token"]):
            assert secret not in text
            assert secret[:24] not in text


# In a process of its own (the allocator's settings are the process's): the auth app's lifespan,
# then two verifications in one thread of its hashing pool, counting the page faults of the second.
_FAULTS = """
import asyncio, json, resource, sys, tempfile
from ultrai_auth.main import build
from ultrai_auth.settings import AuthSettings

async def main():
    app = build(AuthSettings(environment="test", data_dir=tempfile.mkdtemp(), argon2_memory_kib=4096,
                             argon2_time_cost=1, log_level="WARNING", hash_memory_reuse=sys.argv[1] == "1"))
    async with app.router.lifespan_context(app):
        passwords = app.state.passwords
        stored = await passwords.hash("correct horse battery staple")

        def faults_of_the_second_verification():  # both in the same hashing thread
            passwords.hasher.verify(stored, "correct horse battery staple")
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            passwords.hasher.verify(stored, "correct horse battery staple")
            return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

        loop = asyncio.get_running_loop()
        print(json.dumps(await loop.run_in_executor(passwords.pool, faults_of_the_second_verification)))

asyncio.run(main())
"""


def _blueprint_tunables() -> str:
    """GLIBC_TUNABLES as render.yaml sets it for auth."""
    from pathlib import Path

    import yaml

    blueprint = yaml.safe_load((Path(__file__).resolve().parents[2] / "render.yaml").read_text())
    auth = next(s for s in blueprint["services"] if s["name"] == "ultrai-auth")
    return next(v["value"] for v in auth["envVars"] if v["key"] == "GLIBC_TUNABLES")


@pytest.mark.parametrize("case", ["reuse", "fresh", "huge pages"])
def test_a_hash_reuses_the_memory_of_the_one_before(case: str) -> None:
    """argon2 allocates its whole memory cost per hash; mapped afresh each time, every 4 KiB page of
    it is faulted in and zeroed by the kernel again (a third more CPU per login at 19 MiB). With
    HASH_MEMORY_REUSE=true the memory is reused (and kept); with the Blueprint's GLIBC_TUNABLES it
    is mapped afresh but faulted in by 2 MiB huge pages (and given back after each hash)."""
    import json
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    from shared.memory import _libc

    if _libc() is None or not hasattr(resource, "RUSAGE_THREAD"):
        pytest.skip("glibc's allocator on Linux only")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "services" / "auth")])}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "DATABASE_URL", "REDIS_URL", "GLIBC_TUNABLES"):
        env.pop(name, None)
    if case == "huge pages":
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
        if not thp.exists() or "[never]" in thp.read_text():
            pytest.skip("this kernel gives no transparent huge pages")
        env["GLIBC_TUNABLES"] = _blueprint_tunables()
    command = [sys.executable, "-c", _FAULTS, "1" if case == "reuse" else "0"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    faults = json.loads(out.stdout.strip().splitlines()[-1])
    # 4 MiB is 1024 pages of 4 KiB: faulted in anew, a verification takes about that many; by huge
    # pages, half of it at most (the mapping is not aligned to 2 MiB: one huge page fits in it).
    expected = {"reuse": faults < 256, "fresh": faults > 768, "huge pages": faults < 768}
    assert expected[case], faults
